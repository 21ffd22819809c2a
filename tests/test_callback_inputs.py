"""Callback inputs (hardening issue #8): every parser of :mod:`xai_dashboard.inputs` turns any JSON
value into a valid one or a :class:`~xai_dashboard.inputs.BadInput`, and crafted
``/_dash-update-component`` bodies, built from the app's own ``/_dash-dependencies``, are answered
with the problem in words: never a 500, never the wrong images."""
from __future__ import annotations

import base64
import io
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xai_dashboard import analysis, inputs
from xai_dashboard.app import create_app
from xai_dashboard.inputs import BadInput

ROOT = Path(__file__).resolve().parent.parent
DEMO = "digits-demo"
TWIN = "digits-twin"
VIEW_MODULES = {f"xai_dashboard.views.{v}": v
                for v in ("overview", "errors", "threshold", "compare", "explain", "sidebyside")}
# the explanations view's parts and the job button it registers (for other views too)
VIEW_MODULES.update({f"xai_dashboard.views.{m}": "explain"
                     for m in ("explain_source", "explain_controls", "explain_detail", "explain_sanity", "job_button")})


# ---------------------------------------------------------------- two comparable runs, no external data

def make_twin(out: Path, seed: int = 0) -> Path:
    """A copy of the digits demo with its own weights (so its own content key) and noisier logits:
    a second run on the same test images, whose mistakes differ from the demo's."""
    import torch  # write_weights takes a torch state dict
    from safetensors.numpy import load_file

    from trainer.rundir import write_json, write_predictions, write_weights

    shutil.copytree(ROOT / "checkpoints" / DEMO, out)
    (out / "summary.json").unlink(missing_ok=True)  # bound to the demo's weights
    weights = load_file(str(out / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + np.float32(1e-3)  # other bytes, other sha256
    sha = write_weights(out, {k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    p = dict(np.load(out / "predictions.npz"))
    rng = np.random.default_rng(seed)
    logits = p["logits"] + rng.normal(0, 4.0, p["logits"].shape).astype(np.float32)
    write_predictions(out, index=p["index"], label=p["label"], logits=logits, embedding=p["embedding"],
                      weights_sha256=sha)
    meta = json.loads((out / "meta.json").read_text())
    meta["weights_sha256"] = sha
    meta["test_accuracy"] = float((logits.argmax(1) == p["label"]).mean())
    write_json(out / "meta.json", meta)
    return out


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory):
    """The digits demo and its twin: two runs ``store.comparable`` pairs up."""
    from xai_dashboard.store import RunStore

    twin = make_twin(tmp_path_factory.mktemp("twin") / TWIN)
    store = RunStore.from_dirs([ROOT / "checkpoints" / DEMO, twin])
    assert store.names == [DEMO, TWIN], store.banner
    assert store.comparable(DEMO) == [TWIN]
    return store


@pytest.fixture(scope="module")
def client_and_deps(twin_store, tmp_path_factory):
    from xai_dashboard import jobs

    app = create_app(store=twin_store)
    client = app.server.test_client()
    assert client.get("/").status_code == 200  # Dash builds its dependency list on the first request
    deps = client.get("/_dash-dependencies").get_json()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # maps of the explain views
        # a precompute click answers as when the job cannot start; no job writes into the shipped demo run
        mp.setattr(jobs, "start", lambda kind, run_dir, data_dir: None)
        yield app, client, deps


# ---------------------------------------------------------------- crafted payloads

NAN = float("nan")

def _png_url(size: int = 20) -> str:
    """dcc.Upload's data URL of a small grey PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


DEMO_META = json.loads((ROOT / "checkpoints" / DEMO / "meta.json").read_text())
CAM_LAYER = DEMO_META["gradcam_layer"]
# The explanations view's xp-image for an upload prepared for the demo (shape [1, 32, 32]).
_PIXELS = base64.b64encode(bytes(32 * 32)).decode("ascii")
UPLOADED = {"kind": "upload", "run": DEMO, "name": "a.png", "shape": [1, 32, 32], "pixels": _PIXELS}

# What the page sends in normal use, per (component id, property).
VALID = {
    ("run-select", "value"): DEMO, ("cm-mode", "value"): "counts", ("confusion-matrix", "clickData"): None,
    ("gallery-sort", "value"): "confidence", ("gallery-prev", "n_clicks"): 0, ("gallery-next", "n_clicks"): 1,
    ("gallery-selection", "data"): None, ("gallery-page", "data"): 0,
    ("selected-image", "data"): {"run": DEMO, "index": 3},
    ("threshold-class", "value"): 3, ("threshold-by-recall", "n_clicks"): 1, ("threshold-by-cost", "n_clicks"): 0,
    ("threshold-recall", "value"): 0.9, ("threshold-cost", "value"): 5, ("chosen-thresholds", "data"): {},
    ("threshold-slider", "value"): 0.5, ("compare-a", "value"): DEMO, ("compare-b", "value"): TWIN,
    ("gallery-export", "n_clicks"): 1, ("compare-export-set", "value"): "fixed",
    # explanations
    ("upload-image", "contents"): _png_url(), ("upload-image", "filename"): "a.png", ("xp-test-index", "value"): 3,
    ("xp-image", "data"): {"kind": "test", "run": DEMO, "index": 3}, ("xp-method", "value"): "gradcam",
    ("xp-target", "value"): "pred", ("xp-cam-layer", "value"): CAM_LAYER, ("xp-opacity", "value"): 0.5,
    ("xp-param-ig_steps", "value"): 32, ("xp-param-window", "value"): 8, ("xp-param-stride", "value"): 4,
    ("xp-precompute-status", "children"): "", ("layer-select", "value"): CAM_LAYER, ("xp-fm-all", "value"): [],
    ("xp-detail-method", "value"): "gradcam", ("xp-detail-target", "value"): "pred",
    ("xp-precompute", "n_clicks"): 1, ("xp-precompute-poll", "n_intervals"): 1,
    ("xp-sanity-metric", "value"): "spearman",
    # side by side
    ("sbs-index", "value"): 3, ("sbs-source", "data"): {"kind": "test", "run": DEMO, "index": 3},
    ("sbs-runs", "value"): [DEMO, TWIN], ("sbs-methods", "value"): ["gradcam", "saliency"],
    # clicks on pattern-matched buttons, relayed by views.clicks (read only when they fired the callback)
    ("gallery-pair-click", "data"): None,
    ("sbs-link", "data"): {"id": {"type": "sbs-open", "from": "explain"}, "n_clicks": 1},
}
for _key in ("fixed", "introduced", "both"):
    VALID.update({(f"compare-{_key}-prev", "n_clicks"): 0, (f"compare-{_key}-next", "n_clicks"): 1,
                  (f"compare-{_key}-page", "data"): 0})

# Crafted values per (component id, property): (value, a fragment the answer must contain, or None
# where the value is harmless, e.g. a missing click count).
_RUN = [("no-such-run", "unknown run 'no-such-run'"), (42, "unknown run 42"), (["x"], "unknown run"),
        ({"a": 1}, "unknown run")]
_PAGE = [("abc", "'abc'"), ([1], "page"), ({"p": 1}, "page"), (1.5, "1.5"), (-3, None), (10 ** 9, None)]
_SELECTION = [({"run": DEMO, "cells": [[99, 99]]}, "99"), ({"run": DEMO, "cells": [[-1, 2]]}, "-1"),
              ({"run": DEMO, "cells": "abc"}, "'abc'"), ({"run": DEMO, "cells": [[1]]}, "[1]"),
              ({"cells": [[1, 2]]}, "selection"), ("abc", "'abc'"), ({"run": DEMO, "cells": [[True, 2]]}, "True")]
_INDEX = [(-1, "-1"), (10 ** 9, "1000000000"), ("abc", "'abc'"), (2.5, "2.5"), (True, "True"), ([3], "[3]")]
_SHOWN_TEST = [({"kind": "test", "run": DEMO, "index": -1}, "-1"), ({"kind": "test", "run": DEMO, "index": 10 ** 9},
                                                                    "1000000000"),
               ({"kind": "test", "run": "nope", "index": 0}, "unknown run 'nope'"), ("abc", "'abc'"), ([1], "[1]"),
               ({"kind": "test", "run": DEMO}, "None"), ({"kind": "file", "path": "/etc/passwd"}, "'file'")]
_XP_IMAGE = _SHOWN_TEST + [
    ({**UPLOADED, "pixels": "!!"}, "upload it again"), ({**UPLOADED, "shape": [3, 32, 32]}, "upload it again"),
    ({**UPLOADED, "pixels": _PIXELS[:-8]}, "upload it again"), ({**UPLOADED, "pixels": 5}, "upload it again")]
PAIR_IDS = [("99-99", "99"), ("abc", "'abc'"), ("-1--1", "-1"), ("1-2,3", "'1-2,3'"), ("", "pair")]
_CHOSEN = [("abc", "'abc'"), ([1, 2], "threshold"), ({DEMO: {"positive": "x", "threshold": 0.5}}, "'x'"),
           ({DEMO: {"positive": 3, "threshold": NAN}}, "nan"), ({DEMO: "abc"}, "'abc'")]
CRAFTED = {
    ("run-select", "value"): _RUN,
    ("cm-mode", "value"): [("bogus", "'bogus'"), (3, "3")],
    ("confusion-matrix", "clickData"): [
        ({"points": [{"x": "99", "y": "99", "pointNumber": [99, 99]}]}, "99"),
        ({"points": [{"pointNumber": [-1, -1]}]}, "-1"), ({"points": "x"}, "click"), ("abc", "click"),
        ({"points": [{"x": "3"}]}, "click"), ({"points": [{"x": "3", "y": "4"}]}, None)],
    ("gallery-sort", "value"): [("bogus", "'bogus'"), (7, "7"), (None, None)],
    ("gallery-selection", "data"): _SELECTION,
    ("gallery-page", "data"): _PAGE,
    ("selected-image", "data"): [
        ({"run": DEMO, "index": 10 ** 9}, "1000000000"), ({"run": DEMO, "index": -1}, "-1"),
        ({"run": "nope", "index": 0}, "unknown run 'nope'"), ({"run": DEMO}, "index"), ({"index": 1}, "no run"),
        ({"run": DEMO, "index": "abc"}, "'abc'"), ("abc", "'abc'"), ([1], "[1]"), ({"run": DEMO, "index": 2.5}, "2.5")],
    ("threshold-slider", "value"): [("x", "'x'"), (NAN, "nan"), (-0.5, "-0.5"), (2, "2"), ([0.5], "[0.5]")],
    ("threshold-class", "value"): [(99, "99"), (-1, "-1"), ("abc", "'abc'"), (1.5, "1.5"), (True, "True")],
    ("threshold-recall", "value"): [("x", "'x'"), (NAN, "nan"), (5, "5"), (None, "recall")],
    ("threshold-cost", "value"): [("x", "'x'"), (-1, "-1"), (NAN, "nan"), (math.inf, "inf")],
    ("chosen-thresholds", "data"): _CHOSEN,
    ("compare-a", "value"): [("no-such-run", "unknown run 'no-such-run'"), (5, "unknown run 5")],
    ("compare-b", "value"): [("no-such-run", "unknown run 'no-such-run'"), (5, "unknown run 5")],
    # explanations (a method's parameters are sent with that method: the others ignore them)
    ("upload-image", "contents"): [("abc", None), (5, "5"), (["x"], "['x']"), ("data:image/png;base64,!!", None)],
    ("upload-image", "filename"): [(5, None), (["x"], None)],
    ("xp-test-index", "value"): _INDEX,
    ("xp-image", "data"): _XP_IMAGE,
    ("xp-method", "value"): [("bogus", "'bogus'"), (5, "5"), (["gradcam"], "['gradcam']")],
    ("xp-target", "value"): [("99", "99"), ("-1", "'-1'"), ("abc", "'abc'"), (3.5, "3.5"), ([1], "[1]")],
    ("xp-cam-layer", "value"): [("nope", "'nope'"), (5, "5"), ("classifier.fc1", "spatial")],
    ("xp-opacity", "value"): [(NAN, "nan"), (2, "2"), ("x", "'x'"), (-0.1, "-0.1")],
    ("xp-param-ig_steps", "value"): [(10 ** 9, "1000000000"), (1, "got 1"), ("abc", "'abc'"), (2.5, "2.5")],
    ("xp-param-window", "value"): [(0, "got 0"), (300, "300"), ("x", "'x'")],
    ("xp-param-stride", "value"): [(0, "got 0"), (50, "larger than window"), (NAN, "nan")],
    ("layer-select", "value"): [("nope", "'nope'"), (5, "5"), ({"a": 1}, "'a'")],
    ("xp-fm-all", "value"): [("all", "'all'"), (5, "5"), (["bogus"], "'bogus'")],
    ("xp-detail-method", "value"): [("bogus", "'bogus'"), (5, "5")],
    ("xp-detail-target", "value"): [("bogus", "'bogus'"), (5, "5")],
    ("xp-sanity-metric", "value"): [("bogus", "'bogus'"), (5, "5")],
    # side by side
    ("sbs-index", "value"): _INDEX,
    ("sbs-source", "data"): _SHOWN_TEST,
    ("sbs-upload", "contents"): [(5, "5"), ("abc", None), ("data:image/png;base64,!!", None)],
    ("sbs-runs", "value"): [("abc", None), (["nope"], None), (5, None)],
    ("sbs-methods", "value"): [("abc", None), (["nope"], None), (5, None)],
    # the explanations tab's link compares its test image, or the file in upload-image for an upload
    ("sidebyside", "xp-image", "data"): _SHOWN_TEST,
    # relayed clicks: a crafted button id, or something that is no click at all
    ("gallery-pair-click", "data"): [({"id": {"type": "pair", "cells": c}, "n_clicks": 1}, fragment)
                                     for c, fragment in PAIR_IDS] + [("abc", "'pair'"), ({"id": 5}, "'pair'")],
    ("sbs-link", "data"): [({"id": {"type": "sbs-open", "from": "nope"}, "n_clicks": 1}, "unknown link 'nope'"),
                           ({"id": {"type": "sbs-open", "from": 5}, "n_clicks": 1}, "'5'"),
                           ({"id": {"type": "sbs-open"}, "n_clicks": 1}, "unknown link"),
                           ({"id": {"type": "sbs-open", "from": "explain"}, "n_clicks": "1"}, "'sbs-open'"),
                           ({"id": {"type": "pair", "cells": "1-2"}, "n_clicks": 1}, "'sbs-open'")],
}
# Parameters only matter with the method that reads them, upload-image in the side-by-side link with an upload
# shown: sent together; keyed by the value, or by (view, callback, id).
ALONG = {("xp-param-ig_steps", "value"): {("xp-method", "value"): "integrated_gradients"},
         ("xp-param-window", "value"): {("xp-method", "value"): "occlusion"},
         ("xp-param-stride", "value"): {("xp-method", "value"): "occlusion"},
         ("sidebyside", "choose_source", "upload-image"): {("xp-image", "data"): UPLOADED}}
for _key in ("fixed", "introduced", "both"):
    CRAFTED[(f"compare-{_key}-page", "data")] = _PAGE
# A state only matters when the input that reads it fires: crafted states are sent with that trigger;
# keyed by the state, or by (view, callback, state).
TRIGGER = {("threshold-recall", "value"): "threshold-by-recall.n_clicks",
           ("threshold-cost", "value"): "threshold-by-cost.n_clicks",
           ("gallery-page", "data"): "gallery-next.n_clicks",
           ("explain", "choose_source", "xp-image"): "run-select.value",
           ("sidebyside", "choose_source", "run-select"): "sbs-index.value",
           ("sidebyside", "choose_source", "sbs-upload"): "sbs-upload.contents",
           ("sidebyside", "choose_source", "xp-image"): "sbs-link.data",  # the explanations tab's link
           ("sidebyside", "choose_source", "upload-image"): "sbs-link.data"}
for _key in ("fixed", "introduced", "both"):
    TRIGGER[(f"compare-{_key}-page", "data")] = f"compare-{_key}-next.n_clicks"
# Callbacks whose outputs cannot hold a sentence (a dropdown's value): they keep what they have (204);
# the callbacks reading those values then say what is wrong.
NO_TEXT = {"follow_selector", "candidates", "on_run", "warm_model"}
# (view, callback, input) where a malformed stored value is read as its default (``inputs.lenient``): the
# Threshold tab's update_threshold reports and empties a bad chosen-thresholds, the others carry on; the
# explanations view's render reports a bad xp-image, which choose_source replaces.
LENIENT = {("threshold", "pick_class", "chosen-thresholds"), ("compare", "update_comparison", "chosen-thresholds"),
           ("compare", "export_set", "chosen-thresholds"), ("explain", "choose_source", "xp-image")}
# Callbacks that only start work (loading a model): their output never changes, so even a valid body is a 204.
NEVER_UPDATES = {"warm_model"}


def _prop_id(id_, prop: str) -> str:
    return (json.dumps(id_, sort_keys=True, separators=(",", ":")) if isinstance(id_, dict) else id_) + "." + prop


def _entry(spec: dict, tab: str, override: dict) -> dict | list:
    """One inputs/state entry with its valid value, or the crafted one in ``override``."""
    key = (spec["id"], spec["property"])
    value = tab if key == ("view-tabs", "value") else VALID.get(key)
    return {"id": spec["id"], "property": spec["property"], "value": override.get(key, value)}


def _outputs(output: str) -> list[dict] | dict:
    """As the renderer sends them: a list for a multi-output callback, else the one output."""
    parts = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]} for p in output.strip(".").split("...")]
    return parts if output.startswith("..") else parts[0]


def body(dep: dict, tab: str, override: dict, changed: str) -> dict:
    return {"output": dep["output"], "outputs": _outputs(dep["output"]), "changedPropIds": [changed],
            "inputs": [_entry(s, tab, override) for s in dep["inputs"]],
            "state": [_entry(s, tab, override) for s in dep["state"]]}


def crafted_bodies(app, deps: list[dict], view: str):
    """``(callback, input id, what, body, fragment)`` for each crafted value of each input and state of each
    server callback of ``view``: the valid body with that one value replaced (or its "value" left out)."""
    for dep in deps:
        if dep.get("clientside_function"):
            continue
        func = app.callback_map[dep["output"]]["callback"]
        if VIEW_MODULES.get(func.__module__) != view:
            continue
        first = _prop_id(dep["inputs"][0]["id"], dep["inputs"][0]["property"])
        name = func.__name__
        for spec in dep["inputs"] + dep["state"]:
            key = (spec["id"], spec["property"])
            changed = _prop_id(*key)
            if spec in dep["state"]:
                changed = TRIGGER.get((view, name, key[0]), TRIGGER.get(key, first))
            along = ALONG.get((view, name, key[0]), ALONG.get(key, {}))
            for value, fragment in CRAFTED.get((view, *key), CRAFTED.get(key, [])):
                yield name, key[0], f"{key[0]}={value!r}", body(dep, view, {**along, key: value}, changed), fragment
            missing = body(dep, view, along, changed)  # the entry without its "value" field
            for entry in missing["inputs"] + missing["state"]:
                if isinstance(entry, dict) and (entry["id"], entry["property"]) == key:
                    entry.pop("value")
            yield name, key[0], f"{key[0]} missing", missing, None
        yield name, None, "valid", body(dep, view, {}, first), None


def test_no_server_callback_listens_to_pattern_matched_buttons(client_and_deps):
    """Buttons drawn while such a callback runs would cancel its answer (views.clicks: why); their
    clicks reach the server through a relay store instead."""
    app, _, deps = client_and_deps
    patterned = [app.callback_map[d["output"]]["callback"].__name__ for d in deps
                 if not d.get("clientside_function") and "callback" in app.callback_map.get(d["output"], {})
                 and VIEW_MODULES.get(app.callback_map[d["output"]]["callback"].__module__)
                 and any(s["id"].startswith("{") for s in d["inputs"])]
    assert patterned == []


def post(client, payload: dict):
    # allow_nan: the browser never sends NaN, but Flask's JSON parser accepts it from anyone else
    return client.post("/_dash-update-component", data=json.dumps(payload, allow_nan=True),
                       content_type="application/json")


@pytest.mark.parametrize("view", sorted(set(VIEW_MODULES.values())))
def test_crafted_payloads_are_answered_in_words(client_and_deps, view):
    """Every crafted body: 200 or 204, never 500; a bad value is named in an ``input-error`` message
    (figures carry it too; a callback of figures alone names it there), and nothing reaches the
    "internal error" fallback."""
    app, client, deps = client_and_deps
    statuses, problems = {}, []
    for name, input_id, what, payload, fragment in crafted_bodies(app, deps, view):
        r = post(client, payload)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        text, what = r.get_data(as_text=True), f"{name} {what}"
        lenient = (view, name, input_id) in LENIENT
        outputs = payload["outputs"] if isinstance(payload["outputs"], list) else [payload["outputs"]]
        worded = "input-error" in text or all(o["property"] == "figure" for o in outputs)
        if r.status_code not in (200, 204):
            problems.append(f"{what}: HTTP {r.status_code}")
        elif "internal error" in text:
            problems.append(f"{what}: internal error {text[:300]!r}")
        elif (input_id is None or lenient) and (r.status_code != (204 if name in NEVER_UPDATES else 200)
                                                or "input-error" in text):
            problems.append(f"{what}: refused though valid or read leniently: {r.status_code} {text[:300]!r}")
        elif fragment is not None and name not in NO_TEXT and not lenient and (
                r.status_code != 200 or fragment not in text or not worded):
            problems.append(f"{what}: {r.status_code}, no {fragment!r} in the answer {text[:200]!r}")
    print(view, "status codes:", statuses)
    assert statuses[200] > 0 and not problems, "\n".join(problems)


def _matrix_body(deps) -> tuple[dict, dict]:
    """The errors view's confusion-matrix callback (five inputs, two outputs, one state) and a valid body of it."""
    dep = next(d for d in deps if d["output"] == "..confusion-matrix.figure...confused-pairs.children..")
    return dep, body(dep, "errors", {}, "run-select.value")


def _without(payload: dict, key: str) -> dict:
    return {k: v for k, v in payload.items() if k != key}


MALFORMED = {  # name: the valid body -> a body Dash's dispatch cannot take, and a fragment of the answer
    "output missing": (lambda b: _without(b, "output"), "unknown callback output None"),
    "unknown output": (lambda b: {**b, "output": "nope.children"}, "'nope.children'"),
    "clientside output": (lambda b: {**b, "output": "xp-upload-guard.data"}, "'xp-upload-guard.data'"),
    "inputs missing": (lambda b: _without(b, "inputs"), "inputs must list 5"),
    "fewer inputs": (lambda b: {**b, "inputs": b["inputs"][:2]}, "inputs must list 5"),
    "more inputs": (lambda b: {**b, "inputs": b["inputs"] * 2}, "inputs must list 5"),
    "input without property": (lambda b: {**b, "inputs": [{"id": "run-select", "value": DEMO}, *b["inputs"][1:]]},
                               "inputs must list 5"),
    "input not an object": (lambda b: {**b, "inputs": [5, *b["inputs"][1:]]}, "inputs must list 5"),
    "outputs missing": (lambda b: _without(b, "outputs"), "outputs must list 2"),
    "one output of two": (lambda b: {**b, "outputs": b["outputs"][:1]}, "outputs must list 2"),
    "a state too many": (lambda b: {**b, "state": b["state"] + [b["inputs"][0]]}, "state must list 1"),
    "changedPropIds not a list": (lambda b: {**b, "changedPropIds": "run-select.value"}, "changedPropIds"),
    "a list body": (lambda b: [b], "JSON object"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_callback_requests_are_400_in_json(client_and_deps, case):
    """Bodies Dash's own dispatch would fail on (500, before any guarded callback runs) are refused up front."""
    _, client, deps = client_and_deps
    _, valid = _matrix_body(deps)
    assert post(client, valid).status_code == 200  # the check lets a well-formed body through
    malform, fragment = MALFORMED[case]
    r = post(client, malform(valid))
    assert r.status_code == 400 and r.is_json and fragment in r.get_json()["error"], r.get_data(as_text=True)


@pytest.mark.parametrize("data, content_type", [("{not json", "application/json"), ("", "application/json"),
                                                ("run=digits-demo", "application/x-www-form-urlencoded")])
def test_callback_requests_that_are_not_json_are_400_in_json(client_and_deps, data, content_type):
    _, client, _ = client_and_deps
    r = client.post("/_dash-update-component", data=data, content_type=content_type)
    assert r.status_code == 400 and r.get_json() == {"error": "the body must be a JSON object"}


def test_a_failing_callback_is_still_a_logged_500(twin_store, caplog):
    """The check refuses malformed bodies only: a bug behind a well-formed one stays a 500 with its traceback."""
    app = create_app(store=twin_store)
    client = app.server.test_client()
    client.get("/")
    dep, valid = _matrix_body(client.get("/_dash-dependencies").get_json())

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a callback")

    app.callback_map[dep["output"]]["callback"] = broken
    with caplog.at_level("ERROR"):
        r = post(client, valid)
    assert r.status_code == 500 and "a bug in a callback" in caplog.text


# ---------------------------------------------------------------- every parser, any JSON value

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20)
NAMES = ["cat", "dog", "7"]
FAKE_RUN = SimpleNamespace(name="r1", class_names=NAMES, labels=np.zeros(5, dtype=np.int64),
                           images=np.zeros((5, 1, 2, 2), dtype=np.uint8))
FAKE_STORE = SimpleNamespace(runs={"r1": FAKE_RUN}, names=["r1"])
SMALL = st.integers(-3, 12)
CELL = st.lists(SMALL | st.floats(-1, 4) | st.booleans(), min_size=2, max_size=2)
# Values near the valid ones, so the accepting branches are reached too, not only the refusals.
NEAR = {
    "index": SMALL | st.floats(-2, 6), "class": SMALL, "number": st.floats() | st.integers(-2, 2),
    "cells": st.lists(CELL, max_size=4),
    "pair": st.lists(st.tuples(SMALL, SMALL).map(lambda c: f"{c[0]}-{c[1]}"), max_size=3).map(",".join),
    "click": st.fixed_dictionaries({"points": st.lists(st.fixed_dictionaries(
        {}, optional={"x": st.sampled_from(NAMES + [7, 99]), "y": st.sampled_from(NAMES + [7, True]),
                      "pointNumber": CELL}), max_size=2)}),
    "selection": st.fixed_dictionaries({"run": st.sampled_from(["r1", "r2"])},
                                       optional={"cells": st.none() | st.lists(CELL, max_size=3)}),
    "image": st.fixed_dictionaries({}, optional={"run": st.sampled_from(["r1", "zz"]), "index": SMALL}),
    # a valid test image or upload of r1 is drawn often, not only by chance (it was ~1 in 150 draws)
    "explained": st.fixed_dictionaries({"kind": st.just("test"), "run": st.just("r1"), "index": st.integers(0, 4)})
    | st.fixed_dictionaries({"kind": st.just("upload"), "run": st.just("r1"), "shape": st.just([1, 2, 2]),
                             "pixels": st.just("AAAAAA==")}, optional={"name": st.text(max_size=3)})
    | st.fixed_dictionaries({"kind": st.sampled_from(["test", "upload", "file"])}, optional={
        "run": st.sampled_from(["r1", "zz"]), "index": SMALL, "shape": st.sampled_from([[1, 2, 2], [2, 2, 1], "x"]),
        "pixels": st.sampled_from(["AAAAAA==", "AAAA", "!!", 4]), "name": st.text(max_size=3) | st.integers()}),
    "chosen": st.dictionaries(st.sampled_from(["r1", "r2"]), st.fixed_dictionaries(
        {"positive": SMALL | st.text(max_size=2)}, optional={"threshold": st.none() | st.floats() | SMALL})),
}


# Values always tried (hypothesis @example) besides the drawn ones, where drawing alone could miss
# one of the two outcomes: each accepting branch and a refusal.
EXAMPLES = {
    "explained_image": [{"kind": "test", "run": "r1", "index": 4}, {"kind": "test", "run": "r1", "index": 5},
                        {"kind": "upload", "run": "r1", "shape": [1, 2, 2], "pixels": "AAAAAA==", "name": "a.png"},
                        {"kind": "upload", "run": "r1", "shape": [1, 2, 2], "pixels": "AAAA"}],
}


def _pair_ok(c, k):
    return isinstance(c, tuple) and len(c) == 2 and all(type(v) is int and 0 <= v < k for v in c)


PARSERS = {  # name: (call, what a valid answer looks like, values near the valid ones)
    "whole": (lambda v: inputs.whole(v, "n"), lambda r: type(r) is int, NEAR["index"]),
    "index": (lambda v: inputs.index(v, 5), lambda r: type(r) is int and 0 <= r < 5, NEAR["index"]),
    "class_index": (lambda v: inputs.class_index(v, 3), lambda r: type(r) is int and 0 <= r < 3, NEAR["class"]),
    "page": (inputs.page, lambda r: type(r) is int and r >= 0, NEAR["index"]),
    "probability": (inputs.probability, lambda r: type(r) is float and 0 <= r <= 1, NEAR["number"]),
    "number": (lambda v: inputs.number(v, "x", 0, math.inf, low_open=True),
               lambda r: type(r) is float and 0 < r < math.inf, NEAR["number"]),
    "one_of": (lambda v: inputs.one_of(v, ("counts", "row"), "mode"), lambda r: r in ("counts", "row"),
               st.sampled_from(["counts", "row", "x"])),
    "sort_key": (inputs.sort_key, lambda r: r in analysis.SORT_KEYS, st.sampled_from([*analysis.SORT_KEYS, "x"])),
    "run_of": (lambda v: inputs.run_of(FAKE_STORE, v), lambda r: r is FAKE_RUN, st.sampled_from(["r1", "r2"])),
    "cells": (lambda v: inputs.cells(v, 3), lambda r: r is None or (len(r) and all(_pair_ok(c, 3) for c in r)),
              NEAR["cells"]),
    "pair_cells": (lambda v: inputs.pair_cells(v, 3), lambda r: len(r) and all(_pair_ok(c, 3) for c in r),
                   NEAR["pair"]),
    "clicked_cell": (lambda v: inputs.clicked_cell(v, NAMES), lambda r: r is None or _pair_ok(r, 3), NEAR["click"]),
    "gallery_selection": (lambda v: inputs.gallery_selection(v, FAKE_RUN),
                          lambda r: r is None or (r["run"] == "r1" and (r["cells"] is None or all(
                              _pair_ok(tuple(c), 3) for c in r["cells"]))), NEAR["selection"]),
    "selected_image": (lambda v: inputs.selected_image(FAKE_STORE, v),
                       lambda r: r is None or (r[0] is FAKE_RUN and 0 <= r[1] < 5), NEAR["image"]),
    "explained_image": (lambda v: inputs.explained_image(FAKE_STORE, v), lambda r: r[0] is FAKE_RUN and (
        (r[1]["kind"] == "test" and type(r[1]["index"]) is int and 0 <= r[1]["index"] < 5)
        or (r[1]["kind"] == "upload" and r[1]["shape"] == [1, 2, 2] and len(base64.b64decode(r[1]["pixels"])) == 4
            and isinstance(r[1]["name"], str))), NEAR["explained"]),
    "text": (lambda v: inputs.text(v, "the file name"), lambda r: r is None or isinstance(r, str), st.none()),
    "checklist": (lambda v: inputs.checklist(v, ("all",), "the channels shown"),
                  lambda r: isinstance(r, list) and all(c == "all" for c in r),
                  st.lists(st.sampled_from(["all", "x"]))),
    "target": (lambda v: inputs.target(v, 3), lambda r: r in ("pred", "true", "0", "1", "2"),
               st.sampled_from(["pred", "true", "01", "-1", ""]) | SMALL.map(str) | SMALL),
    "chosen_thresholds": (inputs.chosen_thresholds, lambda r: isinstance(r, dict) and all(
        type(e["positive"]) is int and (e["threshold"] is None or 0 <= e["threshold"] <= 1) for e in r.values()),
        NEAR["chosen"]),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_parser_returns_a_valid_value_or_raises_bad_input(name):
    parse, valid, near = PARSERS[name]
    seen = {"ok": 0, "bad": 0}

    def check(value):
        try:
            result = parse(value)
        except BadInput as e:
            assert str(e), "a BadInput must say what is wrong"
            seen["bad"] += 1
            return
        assert valid(result), f"{name}({value!r}) returned {result!r}"
        seen["ok"] += 1

    check = given(JSON | near)(check)
    for value in EXAMPLES.get(name, ()):
        check = example(value)(check)
    settings(max_examples=300, deadline=None, database=None)(check)()
    assert seen["ok"] and seen["bad"], seen  # both branches reached: the property is not vacuous


def test_negative_positions_are_refused_not_wrapped_around():
    """numpy reads index -1 as the last image: the parsers must not let it through."""
    with pytest.raises(BadInput, match="-1 is outside"):
        inputs.index(-1, 5)
    with pytest.raises(BadInput, match=r"\(-1, 2\) is outside"):
        inputs.cells([[-1, 2]], 3)
    with pytest.raises(BadInput, match="whole number, not True"):
        inputs.class_index(True, 3)
    assert inputs.page(-4) == 0 and inputs.index(4.0, 5) == 4


def test_guarded_renders_bad_input_and_logs_unexpected_errors(caplog):
    from dash.exceptions import PreventUpdate

    @inputs.guarded(inputs.hint, inputs.constant(0), inputs.keep)
    def callback(kind):
        if kind == "bad":
            raise BadInput("page must be a whole number, not 'abc'")
        if kind == "bug":
            return {}["missing"]
        if kind == "hidden":
            raise PreventUpdate
        return "fine", 1, 2

    assert callback("ok") == ("fine", 1, 2)
    hint, zero, kept = callback("bad")
    assert hint.children == "page must be a whole number, not 'abc'" and "input-error" in hint.className
    assert zero == 0 and kept is inputs.no_update
    with caplog.at_level("ERROR", logger="xai_dashboard.inputs"):
        hint, _, _ = callback("bug")
    assert hint.children.startswith("internal error: KeyError")
    assert caplog.records and caplog.records[0].exc_info is not None  # the traceback is in the log
    with pytest.raises(PreventUpdate):
        callback("hidden")
    single = inputs.guarded(inputs.figure)(lambda: inputs.run_of(FAKE_STORE, "nope"))()
    assert "unknown run 'nope'" in single.layout.annotations[0].text  # one output: the value itself, not a tuple


def test_a_class_without_test_images_cannot_be_thresholded_and_says_so():
    from xai_dashboard.views.threshold import chosen_by

    run = SimpleNamespace(labels=np.array([0, 0, 1]), class_names=["a", "b", "c"],
                          probs=np.array([[.9, .1, 0], [.8, .2, 0], [.3, .7, 0]]))
    assert chosen_by("threshold-by-recall", run, 1, 1.0, None)[0] == 0.7  # the cost box is not read
    with pytest.raises(BadInput, match="'c' has no test image"):
        chosen_by("threshold-by-cost", run, 2, None, 5)
    with pytest.raises(BadInput, match="the cost ratio must be a number in \\(0, inf\\], not -1"):
        chosen_by("threshold-by-cost", run, 1, None, -1)
