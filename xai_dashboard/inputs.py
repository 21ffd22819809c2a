"""The one boundary between what a browser sends and what the views compute with.

Anyone can post to ``/_dash-update-component``, and a page's ``dcc.Store`` holds whatever
was last put there, so no callback argument is trusted. Each server callback of the views is
wrapped in :func:`guarded` and turns its raw arguments into typed values with the parsers
before doing anything else: those of :mod:`.input_values` (single values) and
:mod:`.input_selections` (runs and stored selections), re-exported here so that a view imports
this one module (an explanation's method parameters and layer are checked by the method
registry, :meth:`.explain_spec.Settings.resolved`, whose message the card shows).
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

import functools
import logging
from typing import Any, Callable

from dash import html, no_update
from dash.exceptions import PreventUpdate

from . import figures
from .input_selections import (cells, chosen_thresholds, clicked_cell, explained_image, gallery_selection,
                               map_selection, pair_cells, run_of, selected_image)
from .input_values import (BadInput, checklist, class_index, confidence_range, index, label_set, number, one_of,
                           page, probability, sort_key, target, text, whole)

__all__ = [  # the guard and renderers below, and the parsers of both modules above (re-exported)
    "BadInput", "cells", "checklist", "chosen_thresholds", "class_index", "clicked_cell", "confidence_range",
    "constant", "explained_image", "figure", "gallery_selection", "guarded", "hint", "index", "keep", "label_set",
    "lenient", "map_selection", "number", "one_of", "page", "pair_cells", "probability", "run_of",
    "selected_image", "shown", "sort_key", "target", "text", "whole",
]

log = logging.getLogger(__name__)


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
