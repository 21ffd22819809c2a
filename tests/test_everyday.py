"""Everyday use without a browser: the address-bar state (:mod:`xai_dashboard.url_state`), the gallery's
orders, confidence filter and jump, and the callback guard's answer to a callback returning the wrong
number of outputs. The browser side is in ``test_everyday_browser.py``."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xai_dashboard import analysis, inputs, url_state
from xai_dashboard.inputs import BadInput
from xai_dashboard.methods import METHODS
from xai_dashboard.views import errors

ROOT = Path(__file__).resolve().parent.parent
TABS = ("overview", "errors", "threshold", "compare", "explain", "sidebyside")


@pytest.fixture(scope="module")
def store():
    from xai_dashboard.store import RunStore

    return RunStore.from_dirs([ROOT / "checkpoints" / "digits-demo"])


def _read(store, search: str) -> tuple[dict, list]:
    values, _, ignored = url_state.state_of(search, store, TABS)
    return values, ignored


def test_a_written_address_reads_back_as_the_same_view(store):
    run = store.get(None)
    view = {"run": run.name, "tab": "explain", "labels": "original",
            "cell": {"run": run.name, "cells": [[4, 5], [5, 4]]}, "sort": "margin", "conf": [0.25, 0.9],
            "page": 2, "image": {"run": run.name, "index": 20}, "method": "saliency", "target": "3",
            "layer": "features.block1", "explain": 7, "compare": None}
    search = url_state.search_of(view, store, TABS)
    assert search.startswith("?run=digits-demo&tab=explain&cell=4-5%2C5-4&sort=margin&conf=0.25-0.9&page=2&image=20")
    values, ignored = _read(store, search)
    assert ignored == []
    assert {k: v for k, v in values.items() if k != "compare"} == {k: v for k, v in view.items() if k != "compare"}


def test_defaults_are_left_out_and_an_empty_query_gives_them(store):
    run = store.get(None)
    values, ignored = _read(store, "")
    assert ignored == [] and values["run"] == run.name and values["tab"] == "overview"
    assert values["cell"] == {"run": run.name, "cells": None} and values["page"] == 0 and values["image"] is None
    assert values["layer"] == run.meta["gradcam_layer"] and values["explain"] == 0 and values["sort"] == "confidence"
    # a correct cell opens least confident first; a link need not say so
    assert _read(store, "?cell=3-3")[0]["sort"] == "least" and _read(store, "?cell=3-5")[0]["sort"] == "confidence"
    # the explanations tab follows the gallery's image unless the address says otherwise
    values, _ = _read(store, "?image=20")
    assert values["explain"] == 20
    assert url_state.search_of(values, store, TABS) == "?run=digits-demo&tab=overview&image=20"


@pytest.mark.parametrize("key, text, why", [
    ("run", "zzz", "unknown run 'zzz'"), ("tab", "nope", "unknown tab"), ("cell", "99-1", "outside 0..9"),
    ("cell", "3-", "unknown confused pair"), ("page", "-3", "whole number"), ("image", "360", "outside 0..359"),
    ("image", "abc", "whole number"), ("conf", "0.9-0.2", "empty"), ("conf", "2-1", "must be a number in [0, 1]"),
    ("conf", "a-b", "must read like"),
    ("method", "\x00", "unknown method"), ("sort", "bogus", "unknown sort order"),
    ("target", "10", "outside 0..9"), ("layer", "features.head", "unknown Grad-CAM layer"),
])
def test_a_bad_value_is_ignored_with_its_default_and_the_reason(store, key, text, why):
    base = {} if key == "tab" else {"tab": "errors"}
    values, ignored = _read(store, "?" + urlencode({**base, key: text}))
    default, _ = _read(store, "?" + urlencode(base))
    assert values == default
    assert len(ignored) == 1 and why in ignored[0]


@pytest.mark.parametrize("search", ["?" + "a" * 3000, "?" + "&".join(["page=1"] * 100)])
def test_an_oversized_query_is_bad_input(store, search):
    with pytest.raises(BadInput):
        url_state.state_of(search, store, TABS)


def _valid(values: dict, store) -> None:
    """Every value is one the page's own parsers accept for the run it names."""
    run = store.get(values["run"])
    k, n = len(run.class_names), len(run.labels)
    assert values["tab"] in TABS and values["labels"] in ("original", "reviewed")
    assert inputs.gallery_selection(values["cell"], run) is not None
    assert values["sort"] in analysis.SORT_KEYS and inputs.confidence_range(values["conf"])
    assert inputs.page(values["page"]) == values["page"]
    assert values["image"] is None or inputs.selected_image(store, values["image"])[1] == values["image"]["index"]
    assert values["method"] in METHODS and inputs.target(values["target"], k) == values["target"]
    assert values["layer"] in [l["name"] for l in run.meta["layers"]]
    assert inputs.index(values["explain"], n) == values["explain"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_query_string_gives_a_valid_view_or_bad_input(store, text):
    try:
        values, _ = _read(store, text)
    except BadInput:
        return
    _valid(values, store)


_TEXT = st.one_of(st.text(max_size=12), st.integers(-5, 400).map(str), st.sampled_from(
    ["digits-demo", "errors", "explain", "3-5", "4-5,5-4", "0.2-0.9", "saliency", "pred", "true", "features.block1"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(url_state.KEYS)), _TEXT, max_size=len(url_state.KEYS)))
def test_any_values_of_the_known_keys_give_a_valid_view(store, query):
    values, ignored = _read(store, "?" + urlencode(query))
    _valid(values, store)
    assert len(ignored) <= len(query)


# ---------------------------------------------------------------- the gallery's orders, filter and jump

def test_each_kind_of_selection_offers_its_own_order_first():
    assert [o["value"] for o in errors.sort_options(((3, 3),))][0] == "least"
    assert errors.sort_options(((3, 3),))[0]["label"] == "Least confident first"
    assert [o["value"] for o in errors.sort_options(((3, 5),))][0] == "confidence"
    assert [o["value"] for o in errors.sort_options(None)][0] == "confidence"
    assert "Most confident first" in [o["label"] for o in errors.sort_options(((3, 3), (4, 4)))]


def test_least_confident_first_and_the_confidence_filter_follow_their_definitions(store):
    run = store.get(None)
    p = analysis.predictions_of(run)
    ordered = errors._ordered(p, ((3, 3),), "least", (0.5, 0.99))
    conf = run.probs.max(1)
    idx = np.flatnonzero((run.labels == 3) & (run.probs.argmax(1) == 3) & (conf >= 0.5) & (conf <= 0.99))
    expected = idx[np.lexsort((idx, conf[idx]))]  # lowest confidence first, ties by test index
    assert ordered.tolist() == expected.tolist()


def test_a_jump_goes_to_the_image_page_or_its_own_cell(store):
    run = store.get(None)
    p = analysis.predictions_of(run)
    everything = (0.0, 1.0)
    mistakes = errors._ordered(p, None, "confidence", everything)
    i = int(mistakes[3])
    selection = {"run": run.name, "cells": None}
    assert errors.jump_to(i, p, run.name, selection, mistakes, "confidence", everything)[3:] == (0, "")
    correct = int(np.flatnonzero(run.labels == run.preds)[0])  # not a mistake: its own (diagonal) cell
    sel, sort_by, ordered, page, note = errors.jump_to(correct, p, run.name, selection, mistakes, "confidence",
                                                       everything)
    t = int(run.labels[correct])
    assert sel["cells"] == [[t, t]] and sort_by == "least" and correct in ordered.tolist() and note == ""
    assert page == ordered.tolist().index(correct) // analysis.PAGE_SIZE
    hidden = errors.jump_to(correct, p, run.name, selection, mistakes, "confidence", (0.0, 0.0))
    assert "outside the confidence range" in hidden[4]


def test_a_callback_returning_the_wrong_number_of_outputs_says_so_in_its_outputs(caplog):
    @inputs.guarded(inputs.figure, inputs.hint)
    def callback():
        return inputs.figures.empty_figure("only one")

    with caplog.at_level("ERROR", logger="xai_dashboard.inputs"):
        fig, hint = callback()
    assert "internal error: TypeError" in hint.children
    assert "internal error: TypeError" in fig.layout.annotations[0].text and fig.layout.xaxis.visible is False
    assert "returned one Figure values for 2 outputs" in caplog.text and caplog.records[0].exc_info
