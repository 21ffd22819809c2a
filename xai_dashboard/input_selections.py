"""Parsers of what names a run and a choice of its images: the run selector, confusion cells and
clicks, and the selections pages keep in a ``dcc.Store`` (gallery, selected and explained image,
chosen thresholds, embedding-map selection).

Part of the input boundary :mod:`.inputs` (which re-exports every name here). A store holds whatever
was last put there, so each is checked against the run it names: indices in ``[0, N)``, classes in
``[0, K)``, an upload's pixels the run's shape.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from .input_values import BadInput, _show, index, probability, whole


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
