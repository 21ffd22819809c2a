"""Links to a run other than the page's default, in headless Chromium (dash_duo): the explanations tab's
target class and Grad-CAM layer of a run with more classes and other layers than the default run arrive
with that run's options (a dropdown clears a value it has no option for), the map renders and the address
keeps them; a link's ignored values are said in the page; a tab click costs no address round trip.

The default run is a three-class MLP built in ``tmp_path`` (no spatial layer), the linked one the
ten-class digits demo (a CNN)."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.callback_owners import Requests
from xai_dashboard.app import create_app

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]
DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "digits-demo"
SLOW = 60


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A three-class MLP run (the default: listed first) and the ten-class digits demo."""
    from tests.test_class_counts import make_image_folder, make_run, noisy_logits
    from xai_dashboard.store import RunStore

    root = tmp_path_factory.mktemp("links")
    spec = make_image_folder(root / "data", ["a", "b", "c"], [2, 2, 2], [12, 12, 12])
    three = make_run(root / "three", spec, lambda y, k: noisy_logits(y, k, 2.0, 0))
    store = RunStore.from_dirs([three, DEMO])
    assert store.names == ["three", "digits-demo"], store.banner
    return store


def _wait(dash_duo, predicate, what: str):
    return WebDriverWait(dash_duo.driver, SLOW, ignored_exceptions=(Exception,)).until(
        lambda d: predicate(d), message=what)


def _query(dash_duo) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(dash_duo.driver.current_url).query).items()}


def _open(dash_duo, store, query: str) -> Requests:
    app = create_app(store=store)
    requests = Requests(app)
    dash_duo.start_server(app)
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.driver.get(dash_duo.server_url + "/" + query)
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    return requests


def test_a_link_to_a_larger_run_selects_its_class_and_layer_and_the_map_renders(dash_duo, two_runs):
    assert len(two_runs.get("three").class_names) == 3  # class 7 and the layer exist only in the linked run
    _open(dash_duo, two_runs, "?run=digits-demo&tab=explain&target=7&layer=features.block1&explain=5")
    dash_duo.wait_for_contains_text("#xp-source-label", "Test image #5", timeout=SLOW)
    dash_duo.wait_for_contains_text("#xp-target", "7: 7", timeout=SLOW)
    dash_duo.wait_for_contains_text("#xp-cam-layer", "features.block1", timeout=SLOW)
    _wait(dash_duo, lambda d: (d.find_element(By.ID, "gradcam-overlay").get_attribute("src") or "")
          .startswith("data:image/png"), "the map did not render")
    assert dash_duo.find_element("#xp-explain-error").text == ""
    _wait(dash_duo, lambda d: _query(dash_duo).get("target") == "7", "the address dropped the target")
    assert _query(dash_duo).get("layer") == "features.block1" and _query(dash_duo).get("run") == "digits-demo"
    assert "unknown target" not in dash_duo.find_element("#xp-faith-scores").text
    assert dash_duo.find_element("#url-notice").text == ""
    assert [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"] == []


def test_a_mistyped_run_is_said_and_a_tab_click_asks_nothing_of_the_address(dash_duo, two_runs):
    requests = _open(dash_duo, two_runs, "?run=nosuchrun&tab=errors&page=x")
    dash_duo.wait_for_contains_text("#url-notice", "The link's run 'nosuchrun' is not loaded; showing three.",
                                    timeout=SLOW)
    assert "page was ignored" in dash_duo.find_element("#url-notice").text
    assert "tab--selected" in dash_duo.driver.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Confusion & gallery']").get_attribute("class")
    requests.settle()
    requests.clear()
    dash_duo.driver.find_element(By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Threshold']").click()
    _wait(dash_duo, lambda d: _query(dash_duo).get("tab") == "threshold", "the address did not follow the tab")
    calls = requests.settle()
    assert not [c for c in calls if "url-notice" in c[0]], calls  # the echo of the page's own write: no request
    dash_duo.driver.back()  # an address the page did not just write is read again
    _wait(dash_duo, lambda d: _query(dash_duo).get("tab") == "errors", "back did not go back")
    _wait(dash_duo, lambda d: "tab--selected" in d.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Confusion & gallery']").get_attribute("class"),
        "back did not reopen the tab")
