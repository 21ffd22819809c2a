"""The faithfulness of the map on screen: the API's ``faithfulness`` block, its budget rule and
cache, the card's pure builder (scores, meanings, curves) and its table as CSV."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from test_api import png_of, post

from xai_dashboard import explain, map_faithfulness
from xai_dashboard.explain_spec import ExplainError, Settings
from xai_dashboard.views.faithfulness_card import curves_figure, scores_children


@pytest.fixture(scope="module")
def client(demo_store, tmp_path_factory):
    from xai_dashboard.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield create_app(store=demo_store).server.test_client()


@pytest.fixture(scope="module")
def block(client, demo_store):
    image = demo_store.get(None).images[3]
    r = post(client, "/api/explain", png_of(image), method="gradcam", format="json", faithfulness=1)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_api_returns_the_faithfulness_block(block):
    f = block["faithfulness"]
    assert set(f) >= {"deletion_auc", "insertion_auc", "random", "edge", "road", "verdict"}
    numbers = [f["deletion_auc"], f["insertion_auc"], f["random"]["deletion_auc"], f["random"]["insertion_auc"],
               f["edge"]["deletion_auc"], f["edge"]["insertion_auc"], f["road"]["morf_mean"], f["road"]["lerf_mean"]]
    assert all(0 <= v <= 1 for v in numbers)
    assert f["random"]["kind"] == "5x5-upsampled"  # Grad-CAM at features.block2 (16, 5, 5): smooth random maps
    assert f["verdict"]["verdict"] in {"faithful", "weak", "not better than random"} and f["verdict"]["reasons"]
    assert len(f["deletion_curve"]) == f["steps"] + 1 == 33
    assert f["target"] == block["target"]["index"]


def test_api_scores_the_map_it_returns(block, demo_store):
    """The block is the faithfulness of the returned heatmap, recomputed here from scratch."""
    from xai_dashboard.faithfulness import faithfulness

    run = demo_store.get(None)
    x = explain.to_input(run.images[3], run.meta)[0]
    with run.lock:
        again = faithfulness(explain.shared_model(run), x, block["target"]["index"], np.array(block["heatmap"]),
                             layer_hw=(5, 5), bf16=map_faithfulness.BF16)
    assert block["faithfulness"]["deletion_auc"] == pytest.approx(again["deletion_auc"], abs=1e-4)
    assert block["faithfulness"]["random"]["insertion_auc"] == pytest.approx(again["random"]["insertion_auc"],
                                                                             abs=1e-4)


def test_pixel_methods_get_pixel_random_maps(client, demo_store):
    r = post(client, "/api/explain", png_of(demo_store.get(None).images[5]), method="saliency", format="json",
             faithfulness=1)
    assert r.status_code == 200 and r.get_json()["faithfulness"]["random"]["kind"] == "pixel"


@pytest.mark.parametrize("fields, words", [
    ({"format": "png", "faithfulness": 1}, "format=json"),
    ({"format": "json", "faithfulness": 1, "target": "0", "versus": "1"}, "single target"),
    ({"format": "json", "faithfulness": "yes"}, "0 or 1"),
])
def test_api_refuses_what_it_cannot_score(client, demo_store, fields, words):
    r = post(client, "/api/explain", png_of(demo_store.get(None).images[0]), **fields)
    assert r.status_code == 400 and words in r.get_json()["error"]


def test_openapi_documents_the_block(client):
    doc = client.get("/api/openapi.json").get_json()
    explain_op = doc["paths"]["/api/explain"]["post"]
    schema = explain_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]["faithfulness"]["required"]) == {
        "deletion_auc", "insertion_auc", "random", "edge", "road", "verdict"}
    assert "faithfulness" in explain_op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


def test_budget_rule_coarsens_then_refuses(monkeypatch):
    run = SimpleNamespace(images=np.zeros((1, 3, 224, 224), np.uint8))
    monkeypatch.setenv(explain.BUDGET_ENV, "10")
    forward = 10 / map_faithfulness.passes(100)  # 225 steps are over the budget, 32 are within it
    monkeypatch.setattr(explain, "pass_seconds", lambda _run: 3 * forward)
    # 32 steps: 2 x (2 shared ends + 10 maps x 31 inner points) curve images + 18 ROAD images
    assert map_faithfulness.passes(32) == 642 and map_faithfulness.affordable_steps(run) == 32
    monkeypatch.setattr(explain, "pass_seconds", lambda _run: 3.0)
    with pytest.raises(ExplainError, match="642 forward passes"):
        map_faithfulness.affordable_steps(run)


def test_scores_are_cached_under_the_maps_key(demo_store, tmp_path):
    from xai_dashboard.cache import explain_cache

    run, cache = demo_store.get(None), explain_cache(tmp_path)
    image, settings = run.images[7], Settings("saliency").resolved(run.meta)
    heat = explain.explain_image(run, image, 2, settings, cache)
    assert map_faithfulness.cached_scores(run, image, 2, settings, cache) is None
    scores = map_faithfulness.map_faithfulness(run, image, 2, settings, heat, cache)
    assert map_faithfulness.cached_scores(run, image, 2, settings, cache) == json.loads(json.dumps(scores))
    assert map_faithfulness.cached_scores(run, image, 3, settings, cache) is None  # another target: another key


def test_card_builder_renders_scores_meanings_and_curves(block):
    scores = block["faithfulness"]
    text = json.dumps([c.to_plotly_json() for c in scores_children(scores)], default=str)
    assert f"{scores['deletion_auc']:#.3g}" in text and f"{scores['insertion_auc']:#.3g}" in text
    assert f"{scores['random']['deletion_auc']:#.3g}" in text and f"{scores['edge']['insertion_auc']:#.3g}" in text
    assert f"{scores['road']['morf_mean']:#.3g}" in text and scores["verdict"]["verdict"] in text
    assert "lower is better" in text and "higher is better" in text and "ROAD" in text
    fig = curves_figure(scores)
    assert [t.name for t in fig.data] == ["deletion, this map", "deletion, random", "insertion, this map",
                                          "insertion, random"]
    assert list(fig.data[0].y) == pytest.approx(scores["deletion_curve"])
    assert list(fig.data[3].y) == pytest.approx(scores["random"]["insertion_curve"])


def test_baselines_are_computed_once_per_image_and_smoothness(demo_store, tmp_path, monkeypatch):
    """Two pixel methods on one image share their random and edge baselines (computed once, then
    cached); Grad-CAM's smooth random maps are another baseline, computed for it."""
    from xai_dashboard import faithfulness
    from xai_dashboard.cache import explain_cache

    run, cache = demo_store.get(None), explain_cache(tmp_path)
    real, calls = faithfulness.baselines, []
    monkeypatch.setattr(faithfulness, "baselines", lambda *a, **k: calls.append(k.get("layer_hw")) or real(*a, **k))
    scores = {}
    for method in ("saliency", "integrated_gradients", "gradcam"):
        settings = Settings(method).resolved(run.meta)
        heat = explain.explain_image(run, run.images[9], 2, settings, cache)
        scores[method] = map_faithfulness.map_faithfulness(run, run.images[9], 2, settings, heat, cache)
    assert calls == [None, (5, 5)]
    assert scores["integrated_gradients"]["random"] == scores["saliency"]["random"]
    assert scores["integrated_gradients"]["edge"] == scores["gradcam"]["edge"] == scores["saliency"]["edge"]
    assert scores["gradcam"]["random"]["kind"] == "5x5-upsampled" and scores["saliency"]["random"]["kind"] == "pixel"


def _table_rows(node) -> dict[str, list[str]]:
    """The card's table as the page gets it: {row heading: [this map, random, edge]}."""
    found = {}
    if isinstance(node, list):
        for child in node:
            found.update(_table_rows(child))
    elif isinstance(node, dict) and "props" not in node:  # the answer: {output id: {property: value}}
        found.update(_table_rows(list(node.values())))
    elif isinstance(node, dict):
        cells = node["props"].get("children")
        if node.get("type") == "Tr" and isinstance(cells, list) and cells[0]["props"].get("children"):
            found[cells[0]["props"]["children"]] = [c["props"].get("children") for c in cells[1:4]]
        else:
            found.update(_table_rows(cells))
    return found


def test_csv_download_is_the_cards_table_unrounded(client, demo_store):
    """Before scoring, "Download CSV" sends nothing and asks for the button; after "Score this map" it sends
    one row per map holding the numbers the card shows (to their three decimals), named after the map."""
    import io

    import pandas as pd
    from tests.test_callback_inputs import body, post as dash_post

    assert client.get("/").status_code == 200
    deps = client.get("/_dash-dependencies").get_json()
    scores_dep = next(d for d in deps if d["output"] == "xp-faith-scores.children")
    csv_dep = next(d for d in deps if d["output"].startswith("..xp-faith-download.data"))
    image = {("xp-image", "data"): {"kind": "test", "run": "digits-demo", "index": 11}}
    click = {**image, ("xp-faith-export", "n_clicks"): 1}
    before = dash_post(client, body(csv_dep, "explain", click, "xp-faith-export.n_clicks")).get_json()["response"]
    assert "data" not in before.get("xp-faith-download", {}) and "Score this map" in json.dumps(before)
    shown = dash_post(client, body(scores_dep, "explain", image, "xp-faith-run.n_clicks"))
    assert shown.status_code == 200 and "Verdict:" in shown.get_data(as_text=True)
    table = _table_rows(shown.get_json()["response"])
    data = dash_post(client, body(csv_dep, "explain", click, "xp-faith-export.n_clicks")).get_json()["response"]
    sent = data["xp-faith-download"]["data"]
    frame = pd.read_csv(io.StringIO(sent["content"])).set_index("map")
    assert list(frame.columns) == ["deletion_auc", "deletion_auc_std", "insertion_auc", "insertion_auc_std",
                                   "road_morf", "road_lerf", "road_gap"]
    random = next(m for m in frame.index if m.startswith("random ("))
    assert list(frame.index) == ["this map", random, "edge"]
    for measure, heading in (("deletion", "Deletion AUC"), ("insertion", "Insertion AUC")):
        this, rnd, edge = (frame.loc[m] for m in ("this map", random, "edge"))
        assert table[heading] == [f"{this[f'{measure}_auc']:#.3g}",
                                  f"{rnd[f'{measure}_auc']:#.3g} ± {rnd[f'{measure}_auc_std']:#.3g}",
                                  f"{edge[f'{measure}_auc']:#.3g}"]
    road = frame.loc["this map"]
    assert table["ROAD MoRF / LeRF"][0] == \
        f"{road['road_morf']:#.3g} / {road['road_lerf']:#.3g} (gap {road['road_gap']:+#.3g})"
    assert frame.loc["edge", ["deletion_auc_std", "road_morf"]].isna().all()  # not measured for the edge map
    run = demo_store.get(None)
    predicted = run.class_names[int(np.argmax(run.probs[11]))]  # the target "pred"
    assert sent["filename"] == f"digits-demo_test11_gradcam_{predicted}-faithfulness.csv"
