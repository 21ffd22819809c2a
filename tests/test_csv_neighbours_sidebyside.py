"""CSV downloads of the nearest-training-examples panel (in the errors view's detail, the explanations
card and the embedding map) and of the side-by-side grid, on the digits demo, through the page's
callbacks: the neighbours are scikit-learn's exact cosine neighbours of the stored embeddings (an
upload's embedding from the model's own forward pass, read off its head), the images' labels and
predictions are the run's stored ones, the label follows the header's reviewed-labels switch, and the
grid's rows are its cells with the numbers the page shows. One browser check downloads both."""
from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics.pairwise import cosine_distances
from sklearn.neighbors import NearestNeighbors

from tests.conftest import CHECKPOINTS
from tests.test_label_issues import _call
from tests.test_sidebyside import png_upload, twice  # noqa: F401 - the fixture
from trainer.rundir import load_run
from xai_dashboard.methods import METHODS
from xai_dashboard.reviews import ReviewStore

DEMO = CHECKPOINTS / "digits-demo"
K = 8  # the panel shows the 8 nearest
NEIGHBOUR_COLUMNS = ["index", "file", "label", "prediction", "confidence", "p(true)", "rank", "train index",
                     "train label", "distance"]
GRID_COLUMNS = ["source run", "index", "file", "label", "run", "input", "prediction", "confidence", "method",
                "deletion AUC", "fails sanity check", "error"]
TEXT = dict.fromkeys(["label", "prediction", "train label", "index", "p(true)", "file"], str)  # "0".."9", blanks


def stored(run_dir: Path = DEMO) -> dict:
    """The run's files read here with numpy: test labels and softmax of the stored logits, the embeddings."""
    with np.load(run_dir / "predictions.npz") as f:
        logits, labels = f["logits"].astype(np.float64), f["label"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    with np.load(run_dir / "embeddings.npz") as f:
        emb = {k: f[k] for k in ("train", "train_label", "test")}
    names = np.asarray(json.loads((run_dir / "meta.json").read_text())["class_names"], dtype=object)
    return {"labels": labels, "probs": probs / probs.sum(1, keepdims=True), "names": names, **emb}


def sklearn_neighbours(data: dict, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices (K,), distances (K,), the whole distance row)``: brute-force cosine kNN in float64."""
    train = data["train"].astype(np.float64)
    nn = NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute").fit(train)
    dist, idx = nn.kneighbors(query[None].astype(np.float64))
    return idx[0], dist[0], cosine_distances(query[None].astype(np.float64), train)[0]


def assert_neighbours(frame: pd.DataFrame, data: dict, query: np.ndarray, atol: float = 1e-5) -> None:
    want_idx, want_dist, row = sklearn_neighbours(data, query)
    got = frame["train index"].to_numpy()
    assert frame["rank"].tolist() == list(range(1, K + 1))
    np.testing.assert_allclose(frame["distance"].to_numpy(), want_dist, atol=atol)
    swapped = got != want_idx  # equally far training images may come in either order
    np.testing.assert_allclose(row[got[swapped]], row[want_idx[swapped]], atol=atol)
    assert frame["train label"].tolist() == data["names"][data["train_label"][got]].tolist()


def download(app, output: str, values: dict, trigger: str) -> tuple[pd.DataFrame | None, str, str]:
    """``(the CSV, its file name, the note's text)`` of the download callback writing ``output``."""
    status, text = _call(app, f"{output}.data", values, trigger)
    assert status == 200, text[:300]
    response = json.loads(text)["response"]
    data = response.get(output, {}).get("data")
    note = json.dumps(next((v for k, v in response.items() if k != output), ""))
    if not data:
        return None, "", note
    return pd.read_csv(io.StringIO(data["content"]), keep_default_na=False, dtype=TEXT), data["filename"], note


@pytest.fixture
def app_of(tmp_path, monkeypatch):
    """``create_app`` with reviews in a fresh folder (the reviewed-labels switch reads them)."""
    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path / "reviews"))
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))

    def make(store):
        app = create_app(store=store)
        app.server.test_client().get("/")
        return app
    return make


# ---------------------------------------------------------------- nearest training examples

PANELS = {"detail-neighbours": "selected-image", "emb-neighbours": "emb-chosen", "xp-neighbours": "xp-image"}


def _export_neighbours(app, panel: str, value, label_set: str = "original"):
    return download(app, f"{panel}-download", {f"{panel}-export.n_clicks": 1, f"{PANELS[panel]}.data": value,
                                               "label-set.value": label_set}, f"{panel}-export.n_clicks")


def _test_image(panel: str, i: int) -> dict:
    return {"kind": "test", "run": "digits-demo", "index": i} if panel == "xp-neighbours" \
        else {"run": "digits-demo", "index": i}


def test_each_panels_csv_is_sklearns_nearest_neighbours_of_the_test_image(app_of, demo_store):
    app, data = app_of(demo_store), stored()
    wrong = int(np.flatnonzero(data["probs"].argmax(1) != data["labels"])[0])
    for panel in PANELS:
        for i in (42, wrong):
            frame, name, note = _export_neighbours(app, panel, _test_image(panel, i))
            assert list(frame.columns) == NEIGHBOUR_COLUMNS and len(frame) == K, (panel, note)
            assert name == f"digits-demo-neighbours-test-{i}.csv"
            assert_neighbours(frame, data, data["test"][i].astype(np.float32))
            y, p = data["labels"][i], data["probs"][i]
            assert set(frame["index"]) == {str(i)} and set(frame["file"]) == {""}
            assert set(frame["label"]) == {data["names"][y]} and set(frame["prediction"]) == {data["names"][p.argmax()]}
            np.testing.assert_allclose(frame["confidence"].astype(float), p.max(), atol=1e-5)
            np.testing.assert_allclose(frame["p(true)"].astype(float), p[y], atol=1e-5)


def test_the_test_images_label_follows_the_reviewed_labels_switch(app_of, demo_store):
    app, data = app_of(demo_store), stored()
    i = 42
    given = int(data["labels"][i])
    reviewed = (given + 3) % len(data["names"])
    ReviewStore.for_run(demo_store.get(None)).save(i, "wrong", reviewed)
    for label_set, y in (("reviewed", reviewed), ("original", given)):
        frame, _, _ = _export_neighbours(app, "detail-neighbours", _test_image("detail-neighbours", i), label_set)
        assert set(frame["label"]) == {data["names"][y]}, label_set
        np.testing.assert_allclose(frame["p(true)"].astype(float), data["probs"][i, y], atol=1e-5)
        # training labels are as given: reviews are of test images
        assert frame["train label"].tolist() == data["names"][data["train_label"][frame["train index"]]].tolist()


def test_an_uploads_csv_is_the_neighbours_of_the_models_own_features(app_of, demo_store):
    """The upload's query is read off the classification head's input in a forward pass made here."""
    app, data, run = app_of(demo_store), stored(), load_run(DEMO)
    pixels = np.ascontiguousarray(demo_store.get(None).images[7])
    upload = {"kind": "upload", "run": "digits-demo", "name": "mine.png", "shape": list(pixels.shape),
              "pixels": base64.b64encode(pixels.tobytes()).decode()}
    model, seen = run.load_model("cpu").eval(), []
    handle = model.head.register_forward_hook(lambda _m, args, out: seen.append((args[0][0], out[0])))
    mean, std = (torch.tensor(run.meta[k], dtype=torch.float32)[:, None, None] for k in ("mean", "std"))
    with torch.no_grad():
        model(((torch.from_numpy(pixels).float() / 255 - mean) / std)[None])
    handle.remove()
    features, logits = seen[0]
    probs = torch.softmax(logits.double(), 0).numpy()
    frame, name, _ = _export_neighbours(app, "xp-neighbours", upload)
    assert name == "digits-demo-neighbours-mine.png.csv" and list(frame.columns) == NEIGHBOUR_COLUMNS
    assert_neighbours(frame, data, features.numpy(), atol=1e-4)
    assert set(frame["index"]) == set(frame["label"]) == set(frame["p(true)"]) == {""}
    assert set(frame["file"]) == {"mine.png"} and set(frame["prediction"]) == {data["names"][probs.argmax()]}
    np.testing.assert_allclose(frame["confidence"].astype(float), probs.max(), atol=1e-4)


def test_without_an_image_or_embeddings_the_note_says_why(app_of, demo_store, tmp_path):
    frame, _, note = _export_neighbours(app_of(demo_store), "emb-neighbours", None)
    assert frame is None and "choose an image first" in note
    from xai_dashboard.store import RunStore

    bare = tmp_path / "digits-demo"
    shutil.copytree(DEMO, bare)
    (bare / "embeddings.npz").unlink()
    frame, _, note = _export_neighbours(app_of(RunStore.from_dirs([bare])), "detail-neighbours",
                                        _test_image("detail-neighbours", 3))
    assert frame is None and "precompute embeddings" in note and "input-error" in note


# ---------------------------------------------------------------- side by side

def _export_grid(app, source: dict, runs: list[str], methods: list[str], label_set: str = "original"):
    return download(app, "sbs-download", {"sbs-export.n_clicks": 1, "sbs-source.data": source,
                                          "sbs-runs.value": runs, "sbs-methods.value": methods,
                                          "label-set.value": label_set}, "sbs-export.n_clicks")


def _walk(node):
    """Every component (as Dash serialises it: ``{"props", "type", "namespace"}``) in a layout's JSON."""
    if isinstance(node, list):
        for child in node:
            yield from _walk(child)
    elif isinstance(node, dict) and "props" in node:
        yield node
        yield from _walk(node["props"].get("children"))


def _page_cells(app, source: dict, runs: list[str], methods: list[str]) -> list[tuple[str, str, str, bool]]:
    """``(run, method, "deletion AUC x.xxx", has the sanity badge)`` per cell of the grid the page draws."""
    status, text = _call(app, "sbs-grid.children", {"sbs-source.data": source, "sbs-runs.value": runs,
                                                     "sbs-methods.value": methods, "view-tabs.value": "sidebyside"},
                         "sbs-source.data")
    assert status == 200, text[:300]
    cells = []
    rows = (c for c in _walk(json.loads(text)["response"]["sbs-grid"]["children"]) if "data-run" in c["props"])
    for tr in rows:
        for td in (c for c in _walk(tr["props"].get("children")) if "data-method" in c["props"]):
            inside = list(_walk(td["props"]["children"]))
            auc = next(c["props"]["children"] for c in inside if c["props"].get("className") == "sbs-auc")
            badge = any("sanity-badge" in (c["props"].get("className") or "") for c in inside)
            cells.append((tr["props"]["data-run"], td["props"]["data-method"], auc, badge))
    return cells if cells else pytest.fail("the page drew no cells")


def test_grid_csv_has_a_row_per_cell_with_the_runs_stored_predictions(app_of, twice):  # noqa: F811
    app, data = app_of(twice), stored()
    i, runs, methods = 11, ["digits-demo", "digits-demo-2"], ["gradcam", "saliency"]
    source = {"kind": "test", "run": "digits-demo", "index": i}
    frame, name, note = _export_grid(app, source, runs, methods)
    assert name == f"digits-demo-test-{i}-side-by-side.csv" and list(frame.columns) == GRID_COLUMNS, note
    assert list(zip(frame["run"], frame["method"])) == [(r, METHODS[m].label) for r in runs for m in methods]
    y, p = data["labels"][i], data["probs"][i]  # the copy has the demo's predictions.npz
    assert set(frame["source run"]) == {"digits-demo"} and set(frame["index"]) == {str(i)}
    assert set(frame["label"]) == {data["names"][y]} and set(frame["file"]) == {""}
    assert set(frame["prediction"]) == {data["names"][p.argmax()]}
    np.testing.assert_allclose(frame["confidence"].astype(float), p.max(), atol=1e-5)
    assert "own copy" in frame["input"].iloc[2] and set(frame["error"]) == {""}
    # the numbers and badges of the grid the page draws for the same choice
    page = _page_cells(app, source, runs, methods)
    assert [(r, m) for r, m, _, _ in page] == [(r, m) for r in runs for m in methods]
    assert [a for _, _, a, _ in page] == [f"deletion AUC {v:.3f}" for v in frame["deletion AUC"].astype(float)]
    assert [b for *_, b in page] == [bool(s) for s in frame["fails sanity check"]]


def test_grid_csv_label_follows_the_switch_and_an_upload_has_no_test_index(app_of, twice):  # noqa: F811
    app, data = app_of(twice), stored()
    i = 5
    given = int(data["labels"][i])
    ReviewStore.for_run(twice.get("digits-demo")).save(i, "wrong", (given + 1) % 10)
    source = {"kind": "test", "run": "digits-demo", "index": i}
    frame, _, _ = _export_grid(app, source, ["digits-demo"], ["saliency"], "reviewed")
    assert frame["label"].tolist() == [data["names"][(given + 1) % 10]]
    status, text = _call(app, "sbs-source-label.children", {"sbs-source.data": source, "label-set.value": "reviewed"},
                         "label-set.value")
    assert status == 200 and f"true class {data['names'][(given + 1) % 10]}; reviewed, given {data['names'][given]}" \
        in text, text[:300]

    raw, url = png_upload(32, 32)  # the run's size: decoding only turns it grey
    frame, name, _ = _export_grid(app, {"kind": "upload", "name": "noise.png", "contents": url}, twice.names,
                                  ["saliency"])
    assert name == "upload-noise.png-side-by-side.csv" and len(frame) == 2
    assert set(frame["index"]) == set(frame["label"]) == set(frame["source run"]) == {""}
    assert set(frame["file"]) == {"noise.png"} and frame["input"].str.contains("decoded for this run").all()
    # the upload's prediction: a forward pass made here on the PNG as Pillow reads it, greyed and normalised
    from PIL import Image

    run = load_run(DEMO)
    grey = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float32)
    x = (torch.from_numpy(grey)[None, None] / 255 - run.meta["mean"][0]) / run.meta["std"][0]
    with torch.no_grad():
        probs = torch.softmax(run.load_model("cpu").eval()(x)[0].double(), 0).numpy()
    assert set(frame["prediction"]) == {data["names"][probs.argmax()]}
    np.testing.assert_allclose(frame["confidence"].astype(float), probs.max(), atol=1e-4)


def test_grid_csv_without_runs_or_methods_says_so(app_of, twice):  # noqa: F811
    frame, _, note = _export_grid(app_of(twice), {"kind": "test", "run": "digits-demo", "index": 0},
                                  ["digits-demo"], [])
    assert frame is None and "choose at least one run and one method" in note


# ---------------------------------------------------------------- in the browser

@pytest.mark.browser
def test_browser_downloads_the_neighbours_and_the_grid(dash_duo, demo_store, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=demo_store))
    driver = dash_duo.driver
    wait = lambda p, what, t=60: WebDriverWait(driver, t, ignored_exceptions=(Exception,)).until(  # noqa: E731
        p, message=what)
    driver.get(dash_duo.server_url + "/?tab=errors&image=42")
    thumbs = "#detail-neighbours .gallery-item"
    wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, thumbs)) == K, "no nearest training examples")
    shown = [int(e.get_attribute("data-index")) for e in driver.find_elements(By.CSS_SELECTOR, thumbs)]
    driver.find_element(By.ID, "detail-neighbours-export").click()
    path = Path(dash_duo.download_path) / "digits-demo-neighbours-test-42.csv"
    wait(lambda d: path.is_file() and path.stat().st_size > 0, "no neighbours CSV", 30)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["train index"]) for r in rows] == shown and {r["index"] for r in rows} == {"42"}

    driver.find_element(By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Side by side']").click()
    wait(lambda d: "#42 of " in d.find_element(By.ID, "sbs-source-label").text, "the grid did not follow the image")
    wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sbs-grid td.sbs-cell img")) == 2, "grid never drew", 90)
    driver.find_element(By.ID, "sbs-export").click()
    path = Path(dash_duo.download_path) / "digits-demo-test-42-side-by-side.csv"
    wait(lambda d: path.is_file() and path.stat().st_size > 0, "no grid CSV", 60)
    rows = list(csv.DictReader(path.open()))
    assert [(r["run"], r["method"], r["index"]) for r in rows] == [("digits-demo", "Grad-CAM", "42"),
                                                                    ("digits-demo", "Saliency", "42")]
    assert re.fullmatch(r"0\.\d+|1\.0", rows[0]["deletion AUC"]), rows[0]
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []
