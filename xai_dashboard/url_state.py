"""The view in the address bar: which run, tab, confusion cell, page, image, method, layer and target
the page shows, as a query string (``?run=cifar10-fast&tab=errors&cell=3-5&page=1&image=1234``), so a
reload, a pasted link or the browser's back and forward buttons reopen the same view.

:data:`KEYS` is the one registry: query key -> the component property holding that piece of state,
how its text is read (checked against the run the link opens: :class:`~.inputs.BadInput` when it is
not a value of that run) and written (None: left out, the default); a dropdown's key also gives its
options for that run, sent together with the value. Adding a piece of state is one entry; keys whose
component is not in the page (a view not installed) are skipped.

Two ``dcc.Location`` components keep page and address bar in step without a callback loop: ``url``
is only read (the page's address at load, then back/forward), ``url-write`` is only written
(``refresh="callback-nav"``: pushed onto the history, and ``url`` hears it). ``url-shown`` holds the
query the page shows: a browser-side callback drops the echo of a write (no request) and hands any other
address to :func:`restore` through ``url-read``; nothing is written before the address has been read once
(the page's first callbacks would otherwise overwrite a pasted link). A bad value in a link is ignored (its
default used), never a failed page; ``url-notice`` says which and why (:func:`notice_of`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from . import analysis, inputs
from .corrected import LABEL_SETS, SWITCH
from .methods import METHODS

log = logging.getLogger(__name__)
MAX_QUERY = 2000  # characters: ten keys with their longest values fit in a few hundred
_NUMBER = re.compile(r"\d{1,9}")
_RANGE = re.compile(r"(\d(?:\.\d{1,4})?)-(\d(?:\.\d{1,4})?)")


@dataclass(frozen=True)
class Context:
    """What a query is read against: the store, the run the link opens, the page's tab values, and the
    values of the keys before this one (read so far, or the page's when writing)."""

    store: Any
    run: Any
    tabs: tuple[str, ...]
    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Key:
    component: str
    prop: str
    read: Callable[[str, Context], Any]              # query text -> property value, or BadInput
    write: Callable[[Any, Context], str | None]      # property value -> query text; None = the default
    default: Callable[[Context], Any]                # the value when the key is absent or bad
    # a dropdown's options for the run the link opens, sent with its value: a value that is not among the
    # options the dropdown holds (the default run's, until its run's callback answers) is cleared by Dash
    options: Callable[[Context], list] | None = None


def number(text: str, what: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise inputs.BadInput(f"{what} must be a whole number, not {text[:40]!r}")
    return int(text)


def confidence_range(text: str) -> list[float]:
    """``"0.2-0.9"`` -> ``[0.2, 0.9]`` (checked by :func:`.inputs.confidence_range`)."""
    m = _RANGE.fullmatch(text)
    if not m:
        raise inputs.BadInput(f"the confidence range must read like 0.2-0.9, not {text[:40]!r}")
    return list(inputs.confidence_range([float(m[1]), float(m[2])]))


def _selection(value, c: Context) -> str | None:
    chosen = inputs.lenient(lambda v: inputs.gallery_selection(v, c.run), value, None)
    return None if chosen is None or chosen["cells"] is None else ",".join(f"{t}-{p}" for t, p in chosen["cells"])


def _image(value, c: Context) -> str | None:
    ok = isinstance(value, dict) and value.get("run") == c.run.name
    return str(inputs.lenient(lambda v: inputs.index(v, len(c.run.labels)), value.get("index"), None)) \
        if ok and value.get("index") is not None else None


def _unless(default: Callable[[Context], Any]) -> Callable[[Any, Context], str | None]:
    """Write a value as text unless it is the default (or None)."""
    return lambda v, c: None if v is None or v == default(c) else str(v)


def _count(value, c: Context) -> str | None:
    """A page or an index (a number input may hand over 5.0), unless 0."""
    n = inputs.lenient(lambda v: inputs.whole(v, "a number"), value, 0)
    return str(n) if n > 0 else None


def _range_text(value, c: Context) -> str | None:
    low, high = inputs.lenient(inputs.confidence_range, value, (0.0, 1.0))
    return None if (low, high) == (0.0, 1.0) else f"{low:g}-{high:g}"


def _cell_sort(c: Context) -> str:
    """The gallery's order for the cell the link opens (its default: :func:`.analysis.default_sort`)."""
    chosen = inputs.lenient(lambda v: inputs.gallery_selection(v, c.run), c.values.get("cell"), None)
    return analysis.default_sort(None if chosen is None or chosen["cells"] is None else chosen["cells"])


def _followed(c: Context) -> int:
    """The explanations tab's default image: the gallery's selected one (it follows it), else #0."""
    image = c.values.get("image")
    return image["index"] if isinstance(image, dict) and image.get("run") == c.run.name \
        and isinstance(image.get("index"), int) else 0


def _explained(value, c: Context) -> str | None:
    n = inputs.lenient(lambda v: inputs.whole(v, "a number"), value, None)
    return None if n is None or n == _followed(c) else str(n)


def _layers(c: Context) -> list[str]:
    from .explain_spec import spatial_layers

    return spatial_layers(c.run.meta)


def _layer(text: str, c: Context) -> str:
    return inputs.one_of(text, _layers(c), "Grad-CAM layer")


def _compared(text: str, c: Context) -> str:
    return inputs.one_of(text, c.store.comparable(c.run.name), "run to compare with")


def _targets(c: Context) -> list[dict]:
    from .views.explain_controls import target_options

    return target_options(c.run.class_names)


def _cam_layers(c: Context) -> list[dict]:
    from .views.explain_controls import cam_layer_options

    return cam_layer_options(c.run.meta)


def _first_comparable(c: Context):
    options = c.store.comparable(c.run.name)
    return options[0] if options else None


_GRADCAM = lambda c: c.run.meta["gradcam_layer"]  # noqa: E731
KEYS: dict[str, Key] = {  # "run" first: every other key is read against the run it names
    "run": Key("run-select", "value", lambda t, c: inputs.run_of(c.store, t).name,
               lambda v, c: v if isinstance(v, str) else None, lambda c: c.store.default),
    "tab": Key("view-tabs", "value", lambda t, c: inputs.one_of(t, c.tabs, "tab"),
               lambda v, c: v if v in c.tabs else None, lambda c: c.tabs[0]),
    "labels": Key(SWITCH, "value", lambda t, c: inputs.one_of(t, LABEL_SETS, "label set"),
                  _unless(lambda c: "original"), lambda c: "original"),
    "cell": Key("gallery-selection", "data",
                lambda t, c: {"run": c.run.name,
                              "cells": [list(x) for x in inputs.pair_cells(t, len(c.run.class_names))]},
                _selection, lambda c: {"run": c.run.name, "cells": None}),
    "sort": Key("gallery-sort", "value", lambda t, c: inputs.sort_key(t), _unless(_cell_sort), _cell_sort),
    "conf": Key("gallery-conf", "value", lambda t, c: confidence_range(t), _range_text, lambda c: [0, 1]),
    "page": Key("gallery-page", "data", lambda t, c: number(t, "the page"), _count, lambda c: 0),
    "image": Key("selected-image", "data",
                 lambda t, c: {"run": c.run.name, "index": inputs.index(number(t, "the image"), len(c.run.labels))},
                 _image, lambda c: None),
    "method": Key("xp-method", "value", lambda t, c: inputs.one_of(t, METHODS, "method"),
                  _unless(lambda c: "gradcam"), lambda c: "gradcam"),
    "target": Key("xp-target", "value", lambda t, c: inputs.target(t, len(c.run.class_names)),
                  _unless(lambda c: "pred"), lambda c: "pred", _targets),
    "layer": Key("xp-cam-layer", "value", _layer, _unless(_GRADCAM), _GRADCAM, _cam_layers),
    "explain": Key("xp-test-index", "value", lambda t, c: inputs.index(number(t, "the image"), len(c.run.labels)),
                   _explained, _followed),
    "compare": Key("compare-b", "value", _compared, _unless(_first_comparable), _first_comparable,
                   lambda c: c.store.comparable(c.run.name)),
}


def query_pairs(search: Any) -> dict[str, str]:
    """A ``location.search`` (``"?a=1&b=2"`` or ``""``) -> its known keys' texts (the first of repeats)."""
    if not isinstance(search, str) or len(search) > MAX_QUERY:
        raise inputs.BadInput(f"the address's query must be text of at most {MAX_QUERY} characters")
    try:
        pairs = parse_qsl(search.removeprefix("?"), keep_blank_values=True, max_num_fields=4 * len(KEYS))
    except ValueError:  # more fields than any page of this app writes
        raise inputs.BadInput("the address's query has too many fields") from None
    out: dict[str, str] = {}
    for key, text in pairs:
        if key in KEYS and key not in out:
            out[key] = text
    return out


def state_of(search: Any, store, tabs: tuple[str, ...], keys: dict[str, Key] = KEYS) -> tuple[dict, Context, list]:
    """``(key -> value, the context, what was ignored)`` for a query: each of ``keys`` read from its
    text, or its default when absent or bad (the reason in the third item)."""
    texts = query_pairs(search)
    ignored: list[str] = []
    run = store.get(None)
    if "run" in texts:  # its error, if any, is recorded below with the others
        run = store.get(inputs.lenient(lambda t: KEYS["run"].read(t, Context(store, run, tabs)), texts["run"], None))
    values: dict[str, Any] = {}
    c = Context(store, run, tabs, values)
    for key, entry in keys.items():
        values[key] = entry.default(c)
        if key in texts:
            try:
                values[key] = entry.read(texts[key], c)
            except inputs.BadInput as e:
                ignored.append(f"{key}: {e}")
    return values, c, ignored


def search_of(values: dict[str, Any], store, tabs: tuple[str, ...], keys: dict[str, Key] = KEYS) -> str:
    """The query for the page's current ``values`` (key -> property value): ``"?run=...&..."``."""
    run = inputs.lenient(lambda v: inputs.run_of(store, v), values.get("run"), store.get(None))
    c = Context(store, run, tabs, values)
    texts = [(key, keys[key].write(v, c)) for key, v in values.items()]
    query = urlencode([(k, t) for k, t in texts if t is not None])
    return f"?{query}" if query else ""


def notice_of(search: str, ignored: list[str], c: Context) -> str:
    """One sentence per value of a link that was ignored (``ignored``: :func:`state_of`'s ``"key: reason"``):
    a mistyped run must not silently show another run."""
    text = query_pairs(search).get("run", "") if isinstance(search, str) and len(search) <= MAX_QUERY else ""
    said = []
    for entry in ignored:
        key, _, reason = entry.partition(": ")
        said.append(f"The link's run {text[:40]!r} is not loaded; showing {c.run.name}." if key == "run" and text
                    else f"The link's {key} was ignored ({reason}); showing its default." if key in KEYS
                    else f"The link was ignored ({entry}).")
    return " ".join(said)


def location() -> html.Div:
    """The components this module reads and writes; placed once in the page."""
    return html.Div([dcc.Location(id="url", refresh=False), dcc.Location(id="url-write", refresh="callback-nav"),
                     dcc.Store(id="url-shown", data=None), dcc.Store(id="url-read", data=None)])


def notice() -> html.Div:
    """Where :func:`notice_of` is shown: placed near the top of the page."""
    return html.Div(id="url-notice", className="hint url-notice", role="status")


# In the browser, so that the echo of the page's own write (every tab change) costs no request: an address
# the page did not write (back/forward, a pasted link) is handed on with a count, so that going back to the
# address read last time is a change too. A first load without a query only marks the address read: the
# layout is its defaults already, and a late answer would undo a tab clicked meanwhile.
_READ_JS = """
function (search, shown, read) {
    const skip = window.dash_clientside.no_update;
    if (search === undefined || search === null || search === shown) { return [skip, skip]; }
    if (search === "" && !read) { return [skip, ""]; }
    return [{search: search, n: ((read && read.n) || 0) + 1}, skip];
}
"""


def register(app, store, tabs: tuple[str, ...], present: set[str]) -> None:
    """The callbacks, over the :data:`KEYS` whose component is ``present`` (the ids in the page)."""
    keys = {k: e for k, e in KEYS.items() if e.component in present}
    listed = {k: e for k, e in keys.items() if e.options is not None}
    app.clientside_callback(_READ_JS, Output("url-read", "data"), Output("url-shown", "data", allow_duplicate=True),
                            Input("url", "search"), State("url-shown", "data"), State("url-read", "data"),
                            prevent_initial_call="initial_duplicate")

    @app.callback(Output("url-shown", "data", allow_duplicate=True), Output("url-notice", "children"),
                  *[Output(e.component, e.prop, allow_duplicate=True) for e in keys.values()],
                  *[Output(e.component, "options", allow_duplicate=True) for e in listed.values()],
                  Input("url-read", "data"), *[State(e.component, e.prop) for e in keys.values()],
                  prevent_initial_call=True)
    @inputs.guarded(*[inputs.keep] * (2 + len(keys) + len(listed)))  # a bug: logged, the page left as it is
    def restore(read, *current):
        search = read.get("search") if isinstance(read, dict) else None
        if search is None:
            raise PreventUpdate
        try:
            wanted, c, ignored = state_of(search, store, tabs, keys)
        except inputs.BadInput as e:
            wanted, c, ignored = *state_of("", store, tabs, keys)[:2], [f"address: {e}"]
        if ignored:
            log.info("address %.200r: ignored %s", search, "; ".join(ignored))
        # only what differs, compared as the address would write it: a store's {run: ...} copy is no change
        changed = {k: wanted[k] if e.write(wanted[k], c) != e.write(now, c) else no_update
                   for (k, e), now in zip(keys.items(), current)}
        options = [no_update if changed[k] is no_update else e.options(c) for k, e in listed.items()]
        return search, notice_of(search, ignored, c), *changed.values(), *options

    @app.callback(Output("url-write", "search"), Output("url-shown", "data", allow_duplicate=True),
                  *[Input(e.component, e.prop) for e in keys.values()], State("url-shown", "data"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.keep)
    def address(*args):
        *values, shown = args
        if shown is None:  # the page's address has not been read yet
            raise PreventUpdate
        search = search_of(dict(zip(keys, values)), store, tabs, keys)
        return (no_update, no_update) if search == shown else (search, search)
