"""Side by side (issue "Explanations you can trust", section 5): one image, one row per loaded run
(each preprocessing it its own way), one column per method, each cell with the prediction, the
overlay and the map's deletion AUC. Pure grid, the page's callbacks over HTTP, and the tab in
headless Chromium. CIFAR-10 parts skip without the shared data; digits-only variants always run."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xai_dashboard import sidebyside as sbs
from xai_dashboard import uploads
from xai_dashboard.inputs import BadInput

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "checkpoints"
SHIPPED = ("cifar10-fast", "cifar10-simple_cnn", "digits-demo")
SLOW = 90  # seconds: the first grid imports Captum and loads every model on a shared core


@pytest.fixture(scope="module")
def three(cifar_dir):
    """The three shipped runs: two CIFAR-10 models (one with GELU) and the 1-channel digits demo."""
    from xai_dashboard.store import RunStore

    store = RunStore.from_dirs([RUNS / n for n in SHIPPED], str(cifar_dir))
    if store.names != list(SHIPPED):
        pytest.skip(f"shipped runs could not all be opened: {store.banner}")
    return store


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """The digits demo loaded twice (``digits-demo``, ``digits-demo-2``): two runs, no external data.
    The second is a copy in another folder (the store opens one path only once)."""
    import shutil

    from xai_dashboard.store import RunStore

    copy = tmp_path_factory.mktemp("twice") / "digits-demo"
    shutil.copytree(RUNS / "digits-demo", copy)
    store = RunStore.from_dirs([RUNS / "digits-demo", copy])
    assert store.names == ["digits-demo", "digits-demo-2"], store.banner
    return store


def png_upload(h: int = 40, w: int = 50, seed: int = 0) -> tuple[bytes, str]:
    """A non-square RGB PNG: its bytes and dcc.Upload's data URL of them."""
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    data = buf.getvalue()
    return data, "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- the grid

def test_one_row_per_run_one_column_per_method(three):
    fast = three.get("cifar10-fast")
    grid = sbs.build_grid(three, sbs.test_source(fast.name, 7), three.names, ["gradcam", "saliency"])
    assert [r.run for r in grid.rows] == list(SHIPPED) and grid.methods == ["gradcam", "saliency"]
    for row in grid.rows:
        assert row.error == "" and [c.method for c in row.cells] == ["gradcam", "saliency"]
        for cell in row.cells:
            assert cell.error == "" and cell.overlay_src.startswith("data:image/png;base64,")
            assert 0.0 <= cell.deletion_auc <= 1.0
    # the CIFAR runs share a test set: their own stored predictions of image #7
    for row in grid.rows[:2]:
        run = three.get(row.run)
        pred = int(run.preds[7])
        assert row.prediction == f"{run.class_names[pred]} ({run.probs[7, pred]:.1%})"
    assert grid.rows[0].shape == grid.rows[1].shape == (3, 32, 32)
    assert grid.rows[2].shape == (1, 32, 32) and "cifar10-fast's test image #7" in grid.rows[2].description


def test_cifar_image_becomes_grey_for_digits_and_digit_becomes_rgb_for_cifar(three):
    fast, digits = three.get("cifar10-fast"), three.get("digits-demo")
    image, index, _ = sbs.image_for(three, sbs.test_source(fast.name, 7), digits, None)
    # same 32 px: no resize, so exactly Pillow's RGB -> L of CIFAR's pixels
    expected = np.asarray(Image.fromarray(fast.images[7].transpose(1, 2, 0)).convert("L"))[None]
    assert index is None and image.shape == (1, 32, 32) and np.array_equal(image, expected)
    image, index, _ = sbs.image_for(three, sbs.test_source(digits.name, 5), fast, None)
    assert index is None and image.shape == (3, 32, 32)
    assert all(np.array_equal(image[c], digits.images[5, 0]) for c in range(3))


def test_method_the_model_cannot_use_shows_the_reason(three):
    grid = sbs.build_grid(three, sbs.test_source("cifar10-simple_cnn", 1), ["cifar10-fast", "cifar10-simple_cnn"],
                          ["guided_gradcam"])
    gelu, relu = (r.cells[0] for r in grid.rows)
    assert gelu.overlay_src == "" and gelu.deletion_auc is None
    assert "not available for this run" in gelu.error and "GELU" in gelu.error
    assert relu.error == "" and relu.overlay_src.startswith("data:image/png")


def test_same_test_set_uses_the_runs_own_copy(twice):
    other = twice.get("digits-demo-2")
    image, index, description = sbs.image_for(twice, sbs.test_source("digits-demo", 5), other, None)
    assert index == 5 and np.array_equal(image, other.images[5]) and "own copy" in description
    row = sbs.build_grid(twice, sbs.test_source("digits-demo", 5), ["digits-demo-2"], ["gradcam"]).rows[0]
    pred = int(other.preds[5])
    assert row.prediction == f"{other.class_names[pred]} ({other.probs[5, pred]:.1%})"


def test_upload_goes_through_each_runs_own_preprocessing(twice):
    data, url = png_upload()
    source = sbs.upload_source(url, "noise.png")
    run = twice.get(None)
    image, index, description = sbs.image_for(twice, source, run, data)
    assert index is None and image.shape == (1, 32, 32) and "noise.png" in description
    assert np.array_equal(image, uploads.decode_image(data, run.meta))
    grid = sbs.build_grid(twice, source, twice.names, ["saliency"])
    assert [r.shape for r in grid.rows] == [(1, 32, 32)] * 2 and all(r.cells[0].overlay_src for r in grid.rows)


def test_upload_shapes_per_run_on_both_datasets(three):
    data, url = png_upload(60, 30)
    source = sbs.upload_source(url, "tall.png")
    grid = sbs.build_grid(three, source, three.names, ["gradcam"])
    assert [r.shape for r in grid.rows] == [(3, 32, 32), (3, 32, 32), (1, 32, 32)]
    for row in grid.rows:
        run = three.get(row.run)
        assert not row.error and row.cells[0].overlay_src
        assert np.array_equal(sbs.image_for(three, source, run, data)[0], uploads.decode_image(data, run.meta))


def test_undecodable_upload_fails_in_its_rows_in_words(twice):
    url = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    grid = sbs.build_grid(twice, sbs.upload_source(url, "bad.png"), twice.names, ["gradcam"])
    assert all(r.cells == [] and "unsupported file" in r.error for r in grid.rows)


def test_a_failing_cell_says_why_and_the_others_render(twice, monkeypatch):
    real = sbs.attribution

    def saliency_breaks(run, image, index, target, settings, cache):
        if settings.method == "saliency":
            raise RuntimeError("simulated failure inside the model")
        return real(run, image, index, target, settings, cache)

    monkeypatch.setattr(sbs, "attribution", saliency_breaks)
    row = sbs.build_grid(twice, sbs.test_source("digits-demo", 0), ["digits-demo"], ["gradcam", "saliency"]).rows[0]
    cam, sal = row.cells
    assert cam.error == "" and cam.overlay_src and cam.deletion_auc is not None
    assert sal.overlay_src == "" and "Saliency failed on this run" in sal.error and "simulated failure" in sal.error


def test_deletion_auc_is_faithfulness_deletion_of_the_cells_map(twice, tmp_path):
    from xai_dashboard import explain, faithfulness
    from xai_dashboard.cache import explain_cache
    from xai_dashboard.explain_spec import Settings

    run, cache = twice.get(None), explain_cache(tmp_path / "cache")
    image, pred = run.images[3], int(run.preds[3])
    cell = sbs.build_cell(run, image, 3, pred, "gradcam", {}, cache)
    settings = Settings("gradcam").resolved(run.meta)
    heat = sbs.attribution(run, image, 3, pred, settings, cache)
    with run.lock:
        curves, _ = faithfulness.deletion_insertion(explain.shared_model(run), explain.to_input(image, run.meta)[0],
                                                    pred, faithfulness.removal_ranks(heat), sbs.AUC_STEPS)
    assert cell.deletion_auc == pytest.approx(faithfulness.auc(curves[0]), abs=1e-6)
    assert sbs.deletion_auc(run, image, pred, np.zeros_like(heat), settings, cache) == cell.deletion_auc  # cached


def test_grid_is_capped_and_says_so(twice):
    grid = sbs.build_grid(twice, sbs.test_source("digits-demo", 0), ["digits-demo", "nope"],
                          ["gradcam", "saliency", "occlusion", "integrated_gradients", "guided_gradcam", "x"])
    assert len(grid.methods) == sbs.MAX_METHODS == 4 and [r.run for r in grid.rows] == ["digits-demo"]
    assert any("ignored unknown run 'nope'" in n for n in grid.notes)
    assert any("first 4 of 5 methods" in n for n in grid.notes) and any("'x'" in n for n in grid.notes)
    runs, notes = sbs.chosen([f"r{i}" for i in range(9)], [f"r{i}" for i in range(9)], sbs.MAX_RUNS, "run")
    assert runs == [f"r{i}" for i in range(6)] and "first 6 of 9 runs" in notes[0]


@pytest.mark.parametrize("value", [None, [], {"kind": "test", "run": "digits-demo", "index": -1},
                                   {"kind": "test", "run": "digits-demo", "index": 360},
                                   {"kind": "test", "run": "nope", "index": 0}, {"kind": "test", "run": "digits-demo"},
                                   {"kind": "upload", "name": "x"}, {"kind": "file", "path": "/etc/passwd"}])
def test_crafted_sources_are_refused_in_words(twice, value):
    with pytest.raises(BadInput):
        sbs.parse_source(twice, value)


def test_upload_source_is_bounded_by_the_upload_limit():
    _, url = png_upload()
    with pytest.raises(uploads.UploadError, match="limit"):
        sbs.upload_source(url, "big.png", max_bytes=100)
    with pytest.raises(uploads.UploadError, match="empty"):
        sbs.upload_source("", "none.png")


# ---------------------------------------------------------------- one-click links and the page's callbacks

def test_links_build_the_source_of_what_the_other_view_shows(twice):
    from xai_dashboard.views.sidebyside import linked_source

    _, url = png_upload()
    assert linked_source(twice, "gallery", {"run": "digits-demo-2", "index": 9}, None, None, None) == \
        {"kind": "test", "run": "digits-demo-2", "index": 9}
    test_shown = {"kind": "test", "run": "digits-demo", "index": 4}
    assert linked_source(twice, "explain", None, test_shown, url, "a.png") == test_shown
    upload_shown = {"kind": "upload", "run": "digits-demo", "name": "a.png", "shape": [1, 32, 32], "pixels": ""}
    assert linked_source(twice, "explain", None, upload_shown, url, "a.png") == \
        {"kind": "upload", "name": "a.png", "contents": url}
    with pytest.raises(BadInput, match="gallery first"):
        linked_source(twice, "gallery", None, None, None, None)


def _choose_payload(app, link_clicks: int, selected) -> dict:
    """A /_dash-update-component body for the source callback, as the browser sends it when an
    ``open_link("gallery")`` in the image detail is clicked: the click relayed through ``sbs-link``
    (views.clicks; ``link_clicks`` 0, which the relay never sends, is no click)."""
    key = next(k for k in app.callback_map if "sbs-source.data" in k)
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in key.strip(".").split("...")]
    link = {"id": {"type": "sbs-open", "from": "gallery"}, "n_clicks": link_clicks}
    return {
        "output": key, "outputs": outputs,
        "changedPropIds": ["sbs-link.data"],
        "inputs": [{"id": "sbs-link", "property": "data", "value": link},
                   {"id": "selected-image", "property": "data", "value": selected},
                   {"id": "sbs-index", "property": "value", "value": None},
                   {"id": "sbs-upload", "property": "contents", "value": None}],
        "state": [{"id": "sbs-upload", "property": "filename", "value": None},
                  {"id": "run-select", "property": "value", "value": "digits-demo"},
                  {"id": "xp-image", "property": "data", "value": None},
                  {"id": "upload-image", "property": "contents", "value": None},
                  {"id": "upload-image", "property": "filename", "value": None}],
    }


def test_gallery_link_sets_the_source_and_opens_the_tab_over_http(twice):
    from xai_dashboard.app import create_app

    app = create_app(store=twice)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    r = client.post("/_dash-update-component", json=_choose_payload(app, 1, {"run": "digits-demo-2", "index": 11}))
    assert r.status_code == 200
    resp = r.get_json()["response"]
    assert resp["sbs-source"]["data"] == {"kind": "test", "run": "digits-demo-2", "index": 11}
    assert next(v for k, v in resp.items() if k.startswith("view-tabs"))["value"] == "sidebyside"
    no_click = client.post("/_dash-update-component", json=_choose_payload(app, 0, {"run": "digits-demo", "index": 1}))
    assert no_click.status_code == 204  # 0 clicks changes nothing
    bad = client.post("/_dash-update-component", json=_choose_payload(app, 1, {"run": "digits-demo", "index": -3}))
    assert bad.status_code == 200 and "outside" in json.dumps(bad.get_json()["response"]["sbs-error"])


# ---------------------------------------------------------------- in the browser

def _click_tab_until(dash_duo, title: str, shown, what: str) -> None:
    """Click tab ``title`` until ``shown(driver)`` holds. The click is repeated: on a loaded machine a
    tab click landing while earlier callbacks are still answering can be lost (seen in CI)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = dash_duo.driver
    for _ in range(SLOW // 15):
        driver.find_element(By.XPATH, f"//*[contains(@class, 'tab') and normalize-space()='{title}']").click()
        try:
            WebDriverWait(driver, 15).until(shown)
            return
        except TimeoutException:
            continue
    raise AssertionError(f"{what}; page: {driver.find_element(By.CSS_SELECTOR, '.tab-body, body').text[:600]!r}")


def _open_gallery(dash_duo) -> None:
    from selenium.webdriver.common.by import By

    _click_tab_until(dash_duo, "Confusion & gallery",
                     lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item"), "gallery is empty")


def _select_first_thumbnail(dash_duo) -> int:
    """Click the gallery's first thumbnail until its detail shows it (a gallery re-rendered right
    after the first click can swallow it); its test index."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = dash_duo.driver
    for _ in range(SLOW // 10):
        try:
            item = driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item")[0]
            index = int(item.get_attribute("data-index"))
            item.click()
            WebDriverWait(driver, 10).until(lambda d: f"#{index}" in d.find_element(By.ID, "detail-caption").text)
            return index
        except (StaleElementReferenceException, TimeoutException):
            continue
    raise AssertionError("the thumbnail's detail never opened")


def _open_grid(dash_duo, store, tmp_path, monkeypatch) -> int:
    """Select a gallery thumbnail, open the Side by side tab and wait for its grid; the chosen index."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=store))
    driver, wait = dash_duo.driver, lambda p, what: WebDriverWait(dash_duo.driver, SLOW).until(p, message=what)
    tab = lambda title: driver.find_element(  # noqa: E731
        By.XPATH, f"//*[contains(@class, 'tab') and normalize-space()='{title}']")
    dash_duo.wait_for_contains_text("#overview-cards", "ACCURACY", timeout=SLOW)
    _open_gallery(dash_duo)
    index = _select_first_thumbnail(dash_duo)
    _click_tab_until(dash_duo, "Side by side",
                     lambda d: f"#{index} of " in d.find_element(By.ID, "sbs-source-label").text,
                     "source did not follow")
    wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sbs-grid td.sbs-cell img")) == 2 * len(store.names),
         "grid never drew every overlay")
    return index


def _rows(dash_duo) -> dict[str, list[str]]:
    from selenium.webdriver.common.by import By

    return {tr.get_attribute("data-run"): [td.get_attribute("data-method")
                                           for td in tr.find_elements(By.CSS_SELECTOR, "td.sbs-cell")]
            for tr in dash_duo.driver.find_elements(By.CSS_SELECTOR, "#sbs-grid tr.sbs-row")}


@pytest.mark.browser
def test_browser_selected_image_one_row_per_run_digits(dash_duo, twice, tmp_path, monkeypatch):
    _open_grid(dash_duo, twice, tmp_path, monkeypatch)
    assert _rows(dash_duo) == {n: list(sbs.DEFAULT_METHODS) for n in twice.names}
    assert "deletion AUC" in dash_duo.driver.find_element("id", "sbs-grid").text
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []


@pytest.mark.browser
def test_browser_selected_image_one_row_per_run_cifar_and_digits(dash_duo, three, tmp_path, monkeypatch):
    _open_grid(dash_duo, three, tmp_path, monkeypatch)
    assert _rows(dash_duo) == {n: list(sbs.DEFAULT_METHODS) for n in SHIPPED}
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []


def _holding(component, id_) -> list:
    """The children of the component in ``component``'s tree whose children include the one with ``id_``."""
    children = getattr(component, "children", None)
    children = children if isinstance(children, list) else [] if children is None else [children]
    if any(getattr(c, "id", None) == id_ for c in children):
        return children
    return next((found for c in children if (found := _holding(c, id_))), [])


def test_gallery_detail_and_explanations_card_place_the_links(twice):
    """The hooks the one-click browser test below clicks: in the gallery's image detail, and in the
    explanations card right under the prediction for the image it explains."""
    from xai_dashboard.views import explain as xv
    from xai_dashboard.views.explain_detail import detail_children
    from xai_dashboard.views.sidebyside import OPEN

    assert {"type": OPEN, "from": "gallery"} in [getattr(c, "id", None) for c in detail_children()]
    card = _holding(xv.layout(twice), "prediction-label")
    ids = [getattr(c, "id", None) for c in card]
    assert ids[ids.index("prediction-label") + 1] == {"type": OPEN, "from": "explain"}


@pytest.mark.browser
def test_browser_one_click_from_gallery_and_from_upload(dash_duo, twice, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=twice))
    driver = dash_duo.driver
    wait = lambda p, what: WebDriverWait(driver, SLOW).until(p, message=what)  # noqa: E731
    tab = lambda title: driver.find_element(  # noqa: E731
        By.XPATH, f"//*[contains(@class, 'tab') and normalize-space()='{title}']")
    grid_drawn = lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sbs-grid td.sbs-cell img")) == 4  # noqa: E731
    dash_duo.wait_for_contains_text("#overview-cards", "ACCURACY", timeout=SLOW)
    _open_gallery(dash_duo)
    driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item")[1].click()
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail-explain .sbs-open"), "no link in the image detail")
    driver.find_element(By.CSS_SELECTOR, "#detail-explain .sbs-open").click()  # one click: tab opens, grid draws
    wait(lambda d: d.find_elements(By.ID, "sbs-grid"), "the link did not open the tab")
    wait(grid_drawn, "grid never drew")
    assert sorted(_rows(dash_duo)) == twice.names
    # an upload on the explanations tab, compared in one click: each run decodes it for itself
    tab("Explanations").click()
    _, url = png_upload(48, 64)
    (tmp_path / "noise.png").write_bytes(base64.b64decode(url.partition(",")[2]))
    driver.find_element(By.CSS_SELECTOR, "#upload-image input[type=file]").send_keys(str(tmp_path / "noise.png"))
    wait(lambda d: "Upload" in d.find_element(By.ID, "xp-source-label").text, "upload not explained")
    driver.find_element(By.CSS_SELECTOR, ".explain-view .sbs-open").click()
    wait(lambda d: "Upload: noise.png" in d.find_element(By.ID, "sbs-source-label").text, "upload not compared")
    # the gallery image's grid is still drawn until the upload's replaces it: wait for the upload's words
    wait(lambda d: grid_drawn(d) and "noise.png, decoded for this run; input 1 x 32 x 32" in d.find_element(
        By.ID, "sbs-grid").text, "upload grid never drew")
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []
