"""The one boundary between what a browser sends and what the views compute with.

Anyone can post to ``/_dash-update-component``, and a page's ``dcc.Store`` holds whatever
was last put there, so no callback argument is trusted. Each server callback of the views is
wrapped in :func:`guarded` and turns its raw arguments into typed values with the parsers
below before doing anything else (an explanation's method parameters and layer are checked by
the method registry, :meth:`.explain_spec.Settings.resolved`, whose message the card shows).
A body Dash itself could not dispatch is refused before any callback runs
(:func:`.app.callback_request_problem`). A parser returns a valid value or raises
:class:`BadInput`; ``guarded`` shows that message in the callback's own outputs (a figure
annotation, a hint in the card), so a crafted or stale request gets a sentence, never a 500,
and never the wrong images (numpy would happily read index -1 as the last image).

Using it in a new callback::

    @app.callback(Output("g", "figure"), Output("note", "children"), Input("run-select", "value"), ...)
    @inputs.guarded(inputs.figure, inputs.hint)      # how each output shows an error, in order
    def update(run_name, page):
        run = inputs.run_of(store, run_name)         # LoadedRun, or BadInput("unknown run ...")
        page = inputs.page(page)                     # int >= 0
        ...

Any other exception is a bug: it is logged with its traceback and shown as "internal error".
"""
from __future__ import annotations

import base64
import binascii
import functools
import logging
import math
import re
from typing import Any, Callable

from dash import html, no_update
from dash.exceptions import PreventUpdate

from . import analysis, figures

log = logging.getLogger(__name__)
_SHOWN = 60  # characters of a bad value quoted back: enough to recognise it, not a page of it


class BadInput(ValueError):
    """A callback argument no page of this app could have sent (or a stale one); the message
    says which and why, in words meant for the page."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


# ---------------------------------------------------------------- how an output shows an error

def figure(message: str):
    """A graph's error: the message in an axis-less figure."""
    return figures.empty_figure(message)


def hint(message: str) -> html.P:
    """A ``children`` output's error: the message as a paragraph (``input-error``, styled as a warning)."""
    return html.P(message, className="hint input-error", role="alert")


def keep(_message: str):
    """An output that cannot show text (a dropdown's value, a download) keeps what it has."""
    return no_update


def constant(value: Any) -> Callable[[str], Any]:
    """An output reset to ``value`` on an error (a page number back to 0, a stale store emptied)."""
    return lambda _message: value


def guarded(*renderers: Callable[[str], Any]):
    """Decorate a callback (under ``@app.callback``) with one renderer per output, in order.

    :class:`BadInput` becomes each renderer's value of its message; ``PreventUpdate`` passes
    through; anything else is logged with its traceback and shown as an internal error.
    """
    def wrap(fn):
        @functools.wraps(fn)
        def guarded_callback(*args):
            try:
                result = fn(*args)
                # checked here, not by Dash after the guard has returned: its failure would be a bare 500
                # leaving every output as it was
                if len(renderers) > 1 and not (isinstance(result, (tuple, list)) and len(result) == len(renderers)):
                    got = len(result) if isinstance(result, (tuple, list)) else f"one {type(result).__name__}"
                    raise TypeError(f"{fn.__name__} returned {got} values for {len(renderers)} outputs")
                return result
            except PreventUpdate:
                raise
            except BadInput as e:
                message = str(e)
            except Exception as e:  # a bug: the page says so in words, the log keeps the traceback
                log.exception("callback %s failed", fn.__name__)
                message = f"internal error: {type(e).__name__} (the server log has the details)"
            out = tuple(render(message) for render in renderers)
            return out if len(out) > 1 else out[0]
        return guarded_callback
    return wrap


def lenient(parse: Callable[[Any], Any], value: Any, default: Any):
    """``parse(value)``, or ``default`` when it is malformed: for stored state that another callback
    of the same view reports and repairs, so this one need not stop the view as well."""
    try:
        return parse(value)
    except BadInput:
        return default


def shown(tab: Any, mine: str) -> None:
    """Compute nothing while the view's tab is hidden (every tab's callbacks fire on page load)."""
    if tab != mine:
        raise PreventUpdate


# ---------------------------------------------------------------- scalars

def whole(value: Any, what: str) -> int:
    """An integer (an integral float is accepted, a bool is not: JSON ``true`` is no index)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{what} must be a whole number, not {_show(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise BadInput(f"{what} must be a whole number, not {_show(value)}")
    return int(value)


def index(value: Any, n: int, what: str = "test image") -> int:
    """A position in ``[0, n)``: negative ones are refused, not counted from the end."""
    i = whole(value, f"the {what} index")
    if not 0 <= i < n:
        raise BadInput(f"{what} index {i} is outside 0..{n - 1}")
    return i


def class_index(value: Any, k: int) -> int:
    """A class of a ``k``-class run."""
    c = whole(value, "the class")
    if not 0 <= c < k:
        raise BadInput(f"class {c} is outside 0..{k - 1}")
    return c


def page(value: Any) -> int:
    """A gallery page: missing means the first, below 0 is the first (the end is clamped by ``page_of``)."""
    return 0 if value is None else max(whole(value, "the page"), 0)


def number(value: Any, what: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (low < value if low_open else low <= value) or not value <= high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise BadInput(f"{what} must be a number in {interval}, not {_show(value)}")
    return float(value)


def probability(value: Any, what: str = "the threshold") -> float:
    return number(value, what, 0.0, 1.0)


def one_of(value: Any, choices, what: str) -> str:
    """One of a fixed set of strings (checked as a string first: a list is not hashable)."""
    if not isinstance(value, str) or value not in choices:
        raise BadInput(f"unknown {what} {_show(value)}; use one of {', '.join(choices)}")
    return value


def text(value: Any, what: str) -> str | None:
    """A string, or None when missing (an upload's contents, a file name)."""
    if value is not None and not isinstance(value, str):
        raise BadInput(f"{what} must be text, not {_show(value)}")
    return value


def checklist(value: Any, choices, what: str) -> list[str]:
    """A checklist's value: a list of some of ``choices``; missing means none ticked."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v in choices for v in value):
        raise BadInput(f"{what} must be a list of some of {', '.join(choices)}, not {_show(value)}")
    return value


_CLASS = re.compile(r"\d{1,6}")


def target(value: Any, k: int) -> str:
    """An explanation's target class as the explanations view names it: ``"pred"``, ``"true"`` or a class
    of a ``k``-class run as its index in text (``"3"``)."""
    if value in ("pred", "true"):
        return value
    if isinstance(value, str) and _CLASS.fullmatch(value):
        return str(class_index(int(value), k))
    raise BadInput(f"unknown target {_show(value)}; use pred, true or a class index 0..{k - 1}")


def sort_key(value: Any) -> str:
    """A key of :data:`analysis.SORT_KEYS`; missing means the default order."""
    return "confidence" if value is None else one_of(value, analysis.SORT_KEYS, "sort order")


def confidence_range(value: Any) -> tuple[float, float]:
    """A range slider's ``[low, high]`` of the top-1 probability, ``0 <= low <= high <= 1``; missing
    means every image."""
    if value is None:
        return 0.0, 1.0
    if not isinstance(value, list) or len(value) != 2:
        raise BadInput(f"the confidence range must be [low, high], not {_show(value)}")
    low, high = (probability(v, "a confidence bound") for v in value)
    if low > high:
        raise BadInput(f"the confidence range {low:g}-{high:g} is empty: the low end is above the high end")
    return low, high


def label_set(value: Any) -> str:
    """The header's label-set switch (:data:`.corrected.LABEL_SETS`); missing means the original labels."""
    from .corrected import LABEL_SETS

    return "original" if value is None else one_of(value, LABEL_SETS, "label set")


# ---------------------------------------------------------------- runs and selections

def run_of(store, value: Any):
    """The :class:`~xai_dashboard.store.LoadedRun` called ``value``."""
    if value is None:
        raise BadInput("no run is selected")
    if not isinstance(value, str) or value not in store.runs:
        raise BadInput(f"unknown run {_show(value)}; loaded runs: {', '.join(store.names)}")
    return store.runs[value]


def cells(value: Any, k: int) -> tuple[tuple[int, int], ...] | None:
    """Confusion cells ``[[true, predicted], ...]`` of a ``k``-class run; None means every mistake."""
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= k * k \
            or not all(isinstance(c, list) and len(c) == 2 for c in value):
        raise BadInput(f"confusion cells must be a list of [true, predicted] pairs, not {_show(value)}")
    out = tuple((whole(t, "a confusion cell"), whole(p, "a confusion cell")) for t, p in value)
    bad = [c for c in out if not (0 <= c[0] < k and 0 <= c[1] < k)]
    if bad:
        raise BadInput(f"confusion cell {bad[0]} is outside 0..{k - 1}")
    return out


_PAIR = re.compile(r"\d{1,6}-\d{1,6}")


def pair_cells(value: Any, k: int) -> tuple[tuple[int, int], ...]:
    """The cells of a confused-pair button id, ``"3-5,5-3"``."""
    parts = value.split(",") if isinstance(value, str) else []
    if not parts or not all(_PAIR.fullmatch(p) for p in parts):
        raise BadInput(f"unknown confused pair {_show(value)}")
    return cells([[int(v) for v in p.split("-")] for p in parts], k)


def clicked_cell(click: Any, class_names: list[str]) -> tuple[int, int] | None:
    """``(true, predicted)`` of a heatmap ``clickData`` (y = true name, x = predicted name, else
    ``pointNumber`` = [row, col]); None when nothing was clicked."""
    if click is None:
        return None
    points = click.get("points") if isinstance(click, dict) else None
    if points == []:
        return None
    point = points[0] if isinstance(points, list) else None
    if not isinstance(point, dict):
        raise BadInput(f"the matrix click {_show(click)} names no cell")
    names = [point.get(a) for a in ("y", "x")]
    if all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) in class_names for v in names):
        return class_names.index(str(names[0])), class_names.index(str(names[1]))
    number_ = point.get("pointNumber")
    if isinstance(number_, list) and len(number_) == 2:
        return cells([number_], len(class_names))[0]
    raise BadInput(f"the matrix click {_show(click)} names no cell")


def gallery_selection(value: Any, run) -> dict | None:
    """The errors gallery's ``{"run", "cells"}`` store for ``run``; None when empty or another run's
    (the caller starts afresh), cells checked against the run's classes."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("run"), str):
        raise BadInput(f"the gallery selection {_show(value)} names no run")
    if value["run"] != run.name:
        return None
    chosen = cells(value.get("cells"), len(run.class_names))
    return {"run": run.name, "cells": None if chosen is None else [list(c) for c in chosen]}


def selected_image(store, value: Any):
    """``(run, index)`` of the ``selected-image`` store, or None when nothing is selected."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise BadInput(f"the selected image must be {{run, index}}, not {_show(value)}")
    run = run_of(store, value.get("run"))
    return run, index(value.get("index"), len(run.labels))


def explained_image(store, value: Any):
    """``(run, source)`` of the explanations view's ``xp-image`` store (its format is in
    :mod:`~xai_dashboard.views.explain_model`): a test image of a loaded run, or an upload prepared for
    that run, whose shape is the run's and whose pixels fill it."""
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind not in ("test", "upload"):
        raise BadInput(f"the image to explain must be a test image or an upload, not {_show(value)}")
    run = run_of(store, value.get("run"))
    if kind == "test":
        return run, {"kind": "test", "run": value["run"], "index": index(value.get("index"), len(run.labels))}
    shape, pixels = list(run.images.shape[1:]), value.get("pixels")
    try:
        fits = value.get("shape") == shape and isinstance(pixels, str) \
            and len(base64.b64decode(pixels, validate=True)) == math.prod(shape)
    except (binascii.Error, ValueError):
        fits = False
    if not fits:
        raise BadInput(f"the uploaded image is not a {' x '.join(map(str, shape))} image prepared for run "
                       f"{value['run']!r}; upload it again")
    name = value.get("name")
    return run, {"kind": "upload", "run": value["run"], "name": name if isinstance(name, str) else "upload",
                 "shape": shape, "pixels": pixels}


def chosen_thresholds(value: Any) -> dict[str, dict]:
    """The ``chosen-thresholds`` store: run name -> ``{"positive": class, "threshold": t}``.
    Class ranges are the reader's business (a run's class count is known only there)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"the chosen thresholds must map runs to {{positive, threshold}}, not {_show(value)}")
    out = {}
    for name, entry in value.items():
        if not isinstance(entry, dict):
            raise BadInput(f"the chosen threshold of run {_show(name)} must be {{positive, threshold}}, "
                           f"not {_show(entry)}")
        positive = whole(entry.get("positive"), "the chosen class")
        t = entry.get("threshold")
        out[name] = {"positive": positive, "threshold": None if t is None else probability(t, "a chosen threshold")}
    return out


def map_selection(value: Any, run) -> list[int] | None:
    """The embedding map's ``{"run", "indices"}`` store (the points a box or lasso selected): distinct test
    indices of ``run`` in ascending order; None when nothing is selected or the selection is another run's."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("run"), str) \
            or not isinstance(value.get("indices"), list):
        raise BadInput(f"the map selection must be {{run, indices}}, not {_show(value)}")
    if value["run"] != run.name:
        return None
    n = len(run.labels)
    if len(value["indices"]) > n:  # more points than the map has: not from this page (bounded before parsing)
        raise BadInput(f"the map selection lists {len(value['indices']):,} points; the map has {n:,}")
    return sorted({index(i, n) for i in value["indices"]})
