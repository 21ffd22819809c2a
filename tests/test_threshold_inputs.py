"""The Threshold tab's number boxes say what is wrong in the user's words: a browser sends None (not the
text typed) for an empty box, text that is no number and a number outside the box's min/max, so the
message asks for a number in the range instead of quoting "None"."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from xai_dashboard import inputs
from xai_dashboard.app import create_app
from xai_dashboard.views.threshold import chosen_by


@pytest.mark.parametrize("trigger, recall, cost, wanted", [
    ("threshold-by-recall", None, 5, "Enter a target recall in (0, 1]"),
    ("threshold-by-cost", 0.9, None, "Enter a cost ratio above 0"),
])
def test_an_empty_or_refused_box_asks_for_a_number_in_range(demo_store, trigger, recall, cost, wanted):
    run = demo_store.get(None)
    with pytest.raises(inputs.BadInput) as e:
        chosen_by(trigger, run, 1, recall, cost)
    assert str(e.value).startswith(wanted) and "None" not in str(e.value)


def test_a_number_that_reaches_the_server_out_of_range_is_quoted(demo_store):
    with pytest.raises(inputs.BadInput, match=r"the target recall must be a number in \(0, 1\], not 1.5"):
        chosen_by("threshold-by-recall", demo_store.get(None), 1, 1.5, 5)


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_typing_out_of_range_or_text_says_so_in_the_page(dash_duo, demo_store):
    dash_duo.start_server(create_app(store=demo_store))
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.wait_for_element("#run-select", timeout=60)
    dash_duo.driver.find_element(By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Threshold']").click()
    dash_duo.wait_for_element("#threshold-cards .metric", timeout=60)
    box = dash_duo.find_element("#threshold-recall")
    for typed in ("1.5", "-3", "abc"):
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE, typed, Keys.TAB)
        dash_duo.find_element("#threshold-by-recall").click()
        dash_duo.wait_for_contains_text("#threshold-note", "Enter a target recall in (0, 1]", timeout=60)
        assert "None" not in dash_duo.find_element("#threshold-note").text
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE, "0.5", Keys.TAB)  # a good value in between: the next message is new
        dash_duo.find_element("#threshold-by-recall").click()
        dash_duo.wait_for_contains_text("#threshold-note", "Threshold ", timeout=60)
