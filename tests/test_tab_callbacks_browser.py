"""A tab click in headless Chromium (dash_duo) runs the callbacks of the view it opens and no other view's,
and that view draws: opened in turn, reopened, linked from the address, opened after switching runs.

Whose a callback is comes from the views' layouts (:mod:`tests.callback_owners`: the view whose layout holds
what it writes; one writing in no view or in several, as the address does, is global); the requests are
counted on the server. Two runs on the digits demo's test images (the demo
and its twin, ``tests/test_callback_inputs.py``), so the comparison view compares and the run can switch."""
from __future__ import annotations

import pytest
from dash import dcc
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sklearn.metrics import confusion_matrix

from tests.callback_owners import Requests, describe, opened_by, output_ids, owners, tabs_of, view_of
from tests.test_callback_inputs import DEMO, make_twin
from tests.test_dashboard_browser import cell_counts
from xai_dashboard.app import components, create_app

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]
SLOW = 60
_TAB = "//*[contains(@class, 'tab') and normalize-space()='{}']"
_HEADLESS = (dcc.Store, dcc.Download, dcc.Interval, dcc.Location)  # components that draw nothing


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from pathlib import Path

    from xai_dashboard.store import RunStore

    twin = make_twin(tmp_path_factory.mktemp("tabs") / "digits-twin")
    store = RunStore.from_dirs([Path(__file__).resolve().parent.parent / "checkpoints" / DEMO, twin])
    assert store.comparable(DEMO) == ["digits-twin"], store.banner
    return store


def _severe(dash_duo) -> list:
    return [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"]


def _start(dash_duo, store, query: str = ""):
    """The app served with its callback requests recorded; the page loaded (``query`` its address's) and quiet."""
    app = create_app(store=store)
    requests = Requests(app)
    dash_duo.start_server(app)
    if query:
        dash_duo.driver.get(dash_duo.server_url + "/" + query)
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    requests.settle()
    return app, requests


def _open(dash_duo, requests, title: str) -> list[tuple[str, int]]:
    """Click the tab titled ``title``; the callback requests that caused, once the page is quiet again."""
    requests.clear()
    dash_duo.driver.find_element(By.XPATH, _TAB.format(title)).click()
    return requests.settle()


def _cm(run) -> list[list[int]]:
    return confusion_matrix(run.labels, run.preds, labels=range(len(run.class_names))).tolist()


def _title(app, view: str) -> str:
    return next(tab.label for tab in tabs_of(app) if tab.value == view)


def test_a_tab_click_runs_only_the_opened_views_callbacks_and_the_view_draws(dash_duo, two_runs):
    app, requests = _start(dash_duo, two_runs)
    owner, tabs = owners(app), tabs_of(app)
    drawn_ids = {c.id for tab in tabs for c in components(tab.children)
                 if isinstance(getattr(c, "id", None), str) and not isinstance(c, _HEADLESS)}
    seen = set()
    for tab in [*tabs[1:], tabs[1], tabs[0]]:  # every view, the first one again (reopened), back to the start
        calls = _open(dash_duo, requests, tab.label)
        foreign = [(out, status) for out, status in calls if view_of(out, owner) not in (None, tab.value)]
        assert not foreign, f"opening {tab.value} ran other views' callbacks:\n{describe(foreign, owner)}"
        assert set(opened_by(app, tab.value)) <= {out for out, _ in calls}, describe(calls, owner)
        if tab.value in seen or not opened_by(app, tab.value):
            continue
        seen.add(tab.value)
        answered = [out for out, status in calls if status == 200 and view_of(out, owner) == tab.value]
        assert answered, f"{tab.value} drew nothing:\n{describe(calls, owner)}"
        for i in {i for out in answered for i in output_ids(out)} & drawn_ids:  # what it drew is in the page
            assert dash_duo.driver.find_elements(By.ID, i), f"{tab.value}: #{i} answered but not in the page"
    assert _severe(dash_duo) == []


def test_a_linked_view_draws_and_a_view_opened_after_a_run_switch_shows_that_run(dash_duo, two_runs):
    demo, twin = (two_runs.get(n) for n in two_runs.names)
    assert _cm(demo) != _cm(twin)
    app, requests = _start(dash_duo, two_runs, "?tab=errors")
    owner = owners(app)
    WebDriverWait(dash_duo.driver, SLOW).until(lambda d: cell_counts(dash_duo, "confusion-matrix") == _cm(demo),
                                               message="the linked errors view did not draw the demo's matrix")

    _open(dash_duo, requests, _title(app, "overview"))
    requests.clear()
    dash_duo.select_dcc_dropdown("#run-select", value=twin.name)
    dash_duo.wait_for_contains_text("#run-info", twin.name, timeout=SLOW)
    hidden = requests.settle()
    assert not [out for out, status in hidden if out in opened_by(app, "errors") and status == 200], \
        describe(hidden, owner)  # the hidden errors view drew nothing for the new run
    calls = _open(dash_duo, requests, _title(app, "errors"))
    assert not [c for c in calls if view_of(c[0], owner) not in (None, "errors")], describe(calls, owner)
    WebDriverWait(dash_duo.driver, SLOW).until(
        lambda d: cell_counts(dash_duo, "confusion-matrix") == _cm(twin),
        message="the errors view opened after the switch did not draw the twin's matrix")
    dash_duo.wait_for_text_to_equal("#gallery-count", str(int((twin.preds != twin.labels).sum())), timeout=SLOW)
    assert _severe(dash_duo) == []
