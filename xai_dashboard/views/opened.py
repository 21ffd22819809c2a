"""Which view was just opened, so that a tab click runs the callbacks of that view alone.

Every view's layout is in the page (one ``dcc.Tabs``, :func:`..app.create_app`). A callback listening to
the tab selector itself (``view-tabs.value``) runs on every tab click whatever its view: some 25 requests
a click, most of them only to answer "hidden, nothing to do". Instead:

- each view has a ``dcc.Store`` ``{view}-opened`` (:func:`stores`) holding how often its tab has been
  opened in this page, and one callback in the browser (:func:`register`: no request) counts up the
  store of the tab just shown and leaves every other one as it is;
- a view's callback that must draw when its tab opens takes :func:`when_opened` of its view: its own store
  as an Input (so opening that tab, and no other, fires it, again on every reopening) followed by the tab
  selector as a State, for :func:`..inputs.shown`: the view computes nothing while hidden when another
  input (the run selector, the label set) fires it, and draws once opened.

A tab opened from the address (:mod:`..url_state` sets ``view-tabs.value``) counts up its store too.
"""
from __future__ import annotations

import json

from dash import Input, Output, State, dcc

TABS = "view-tabs"  # the tab selector's id; its value is the shown view's name (app.create_app)


def opened_id(view: str) -> str:
    return f"{view}-opened"


def when_opened(view: str) -> tuple[Input, State]:
    """The two dependencies a callback of ``view`` takes in place of the tab selector; its function gets
    ``(times opened, the tab shown)`` there and passes the second to :func:`..inputs.shown`."""
    return Input(opened_id(view), "data"), State(TABS, "value")


def stores(views: tuple[str, ...]) -> list[dcc.Store]:
    """One store per view, placed once in the page beside the tabs."""
    return [dcc.Store(id=opened_id(v), data=0) for v in views]


_COUNT_JS = """
function (tab, ...opened) {
    const views = %s, dc = window.dash_clientside;
    return views.map((view, i) => view === tab ? (opened[i] || 0) + 1 : dc.no_update);
}
"""


def register(app, views: tuple[str, ...]) -> None:
    """The browser-side callback counting up the opened tab's store (:func:`stores` must be in the page).
    Not at page load: the views' callbacks run then anyway, and the shown one draws."""
    if not views:
        return
    # the outputs as a list: one view still answers a list of one
    app.clientside_callback(_COUNT_JS % json.dumps(list(views)), [Output(opened_id(v), "data") for v in views],
                            Input(TABS, "value"), *[State(opened_id(v), "data") for v in views],
                            prevent_initial_call=True)
