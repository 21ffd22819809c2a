"""Which view a Dash callback request belongs to, and a record of the requests an app answers: what
``tests/test_tab_callbacks_browser.py`` and ``bench/tab_callbacks.py`` count a tab click by.

A view owns the components of its layout (``layout(store)`` of its module in the ``VIEWS`` registry, one
per tab of the page, so no list of ids is written down; the page keeps their stores outside the tabs), and
a callback request when every output it writes in views is that view's. A callback writing in no view (the
address, the header's notes) or in several at once (the address read back into the page:
``url_state.restore``) is global.
"""
from __future__ import annotations

import importlib
import threading
import time

import flask
from dash import dcc

from xai_dashboard.app import components


def tabs_of(app) -> list[dcc.Tab]:
    """The page's tabs, in order (those of its one ``dcc.Tabs``)."""
    (tabs,) = [c for c in components(app.layout) if isinstance(c, dcc.Tabs)]
    return list(tabs.children)


def owners(app) -> dict[str, str]:
    """Component id (a string) -> the view (tab value) whose layout holds it."""
    store = app.server.config["XAI_STORE"]
    return {c.id: tab.value for tab in tabs_of(app)
            for c in components(importlib.import_module(f"xai_dashboard.views.{tab.value}").layout(store))
            if isinstance(getattr(c, "id", None), str)}


def output_ids(output: str) -> list[str]:
    """The component ids a request's ``output`` key writes (``"..a.children...b.data@1f2e.."`` -> a, b)."""
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return [p.split("@", 1)[0].rsplit(".", 1)[0] for p in parts]


def view_of(output: str, owner: dict[str, str]) -> str | None:
    """The view a callback request belongs to (what it writes in the tabs is that view's); None: global."""
    views = {owner[i] for i in output_ids(output) if i in owner}
    return views.pop() if len(views) == 1 else None


class Requests:
    """The callback requests an app answers (``(output key, status)``, in order), recorded by Flask hooks."""

    def __init__(self, app):
        self.calls: list[tuple[str, int]] = []
        self.busy, self.last = 0, time.perf_counter()
        self._lock = threading.Lock()
        path = app.config.routes_pathname_prefix + "_dash-update-component"

        def ours(request) -> bool:
            return request.path == path and request.method == "POST"

        def began():
            if ours(flask.request):
                flask.g.counted = True
                with self._lock:
                    self.busy += 1
                    self.last = time.perf_counter()

        def answered(response):
            if flask.g.get("counted"):  # another hook may have answered before began ran
                body = flask.request.get_json(silent=True) or {}
                with self._lock:
                    self.calls.append((str(body.get("output")), response.status_code))
                    self.busy -= 1
                    self.last = time.perf_counter()
            return response

        app.server.before_request(began)
        app.server.after_request(answered)

    def clear(self) -> None:
        """Forget the calls so far; :meth:`settle` then waits its quiet time from now (a click's first
        request may come a moment after the click)."""
        with self._lock:
            self.calls, self.last = [], time.perf_counter()

    def settle(self, quiet: float = 1.5, timeout: float = 90) -> list[tuple[str, int]]:
        """Wait until no request is in flight and none has come for ``quiet`` seconds; the calls so far."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                if self.busy == 0 and time.perf_counter() - self.last > quiet:
                    return list(self.calls)
            time.sleep(0.1)
        raise TimeoutError(f"callback requests still coming after {timeout} s: {self.calls[-5:]}")


def opened_by(app, view: str) -> list[str]:
    """The output keys of the server callbacks taking ``view``'s opened counter (views.opened) as an input."""
    from xai_dashboard.views.opened import opened_id

    return [k for k, c in app.callback_map.items() if "callback" in c
            and any(i["id"] == opened_id(view) for i in c["inputs"])]


def describe(calls: list[tuple[str, int]], owner: dict[str, str]) -> str:
    """One line per request: its status, whose it is, what it writes."""
    return "\n".join(f"{status} {view_of(out, owner) or 'global'}: {out}" for out, status in calls)

