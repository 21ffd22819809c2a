"""Hardening: the map cache never unpickles and stays private, labels that are not Latin-1 travel in
headers through a real server, and every response carries the security headers."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import threading
from pathlib import Path
from urllib.parse import unquote

import diskcache
import numpy as np
import pytest
from PIL import Image

from xai_dashboard import cache as cache_module
from xai_dashboard.cache import PickledRowError, SafeDisk, explain_cache
from xai_dashboard.explain_spec import image_digest, predict_key

ROOT = Path(__file__).resolve().parent.parent


def png_of(image) -> bytes:
    arr = np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


class Planted:
    """Unpickling this creates ``marker``: proof that a pickled row from the cache folder was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


# ------------------------------------------------------------------ cache: no pickle, private files

@pytest.mark.parametrize("size", [100, 200_000], ids=["row", "file"])  # in the database, or a .val file
def test_a_planted_pickle_is_never_unpickled(demo_store, tmp_path, monkeypatch, size):
    from xai_dashboard.app import create_app

    folder, marker = tmp_path / "cache", tmp_path / "PWNED"
    run = demo_store.get(None)
    image = run.images[3]
    key = predict_key(run.meta, image_digest(image))  # the row /api/predict reads for this image
    monkeypatch.setenv(cache_module.CACHE_ENV, str(folder))
    cache = explain_cache()
    with diskcache.Cache(str(folder)) as plain:  # what anyone with write access to the folder could do
        plain.set(key, [Planted(marker), b"x" * size])
        plain.set(("a", "pickled", "key"), b"v")
    assert cache.get(key) is None and cache.get(key, "miss") == "miss"
    with pytest.raises(KeyError):
        cache[key]
    with pytest.raises(PickledRowError):
        list(cache)  # iterating would unpickle the planted key
    client = create_app(store=demo_store).server.test_client()
    r = client.post("/api/predict", data={"file": (io.BytesIO(png_of(image)), "x.png")},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and r.get_json()["index"] == int(run.preds[3])
    assert isinstance(cache.get(key), bytes)  # the planted row was overwritten by the real answer
    assert not marker.exists()


def test_safe_disk_refuses_to_pickle(tmp_path):
    cache = explain_cache(tmp_path / "c")
    for value in (b"raw", "text", 3, 2.5, b"x" * 100_000):
        cache.set("k", value)
        assert cache.get("k") == value
    for value in ([1, 2], {"a": 1}, np.zeros(3), None, True.__class__):
        with pytest.raises(TypeError, match="bytes, str, int or float"):
            cache.set("k", value)
    with pytest.raises(TypeError, match="keys"):
        cache.set(("tuple", "key"), b"v")
    with pytest.raises(PickledRowError):
        SafeDisk(str(tmp_path)).fetch(diskcache.core.MODE_PICKLE, None, b"\x80\x04N.", False)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def test_cache_folders_are_0700_and_files_0600(tmp_path):
    old = os.umask(0o022)  # the usual umask, under which diskcache alone writes 0644 files and 0755 folders
    try:
        cache = explain_cache(tmp_path / "private")
        cache.set("small", b"x" * 10)
        cache.set("large", b"y" * 100_000)  # over diskcache's min_file_size: a file in two new sub-folders
        cache.set("text", "z" * 100_000)
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "private")
    val_files = [p for p in modes if p.endswith(".val")]
    assert len(val_files) == 2 and "cache.db" in modes
    for path, mode in modes.items():
        want = 0o700 if (tmp_path / "private" / path).is_dir() else 0o600
        assert mode == want, (path, oct(mode), modes)


# ------------------------------------------------------------------ labels that are not Latin-1, over real HTTP

@pytest.fixture(scope="module")
def cat_run(tmp_path_factory):
    """The digits demo with class names no Latin-1 header can carry."""
    from xai_dashboard.store import RunStore

    folder = tmp_path_factory.mktemp("cjk") / "digits-cjk"
    shutil.copytree(ROOT / "checkpoints" / "digits-demo", folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["class_names"] = ["猫", "犬", "鳥", "魚", "馬", "牛", "羊", "豚", "鶏", "Ωmega\r\nX-Evil: 1"]
    (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
    (folder / "summary.json").unlink(missing_ok=True)  # bound to the old metadata
    store = RunStore.from_dirs([folder])
    assert store.names == ["digits-cjk"], store.banner
    return store


@pytest.fixture(scope="module")
def live_server(cat_run, tmp_path_factory):
    """werkzeug's threaded dev server (the one that hung 60 s) on a free port."""
    from werkzeug.serving import make_server

    from xai_dashboard.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache_module.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        server = make_server("127.0.0.1", 0, create_app(store=cat_run).server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}", cat_run.get(None)
        server.shutdown()


def test_non_latin1_labels_in_headers(live_server):
    import requests

    url, run = live_server
    for i, target in ((0, "pred"), (1, "9")):
        image = run.images[i]
        r = requests.post(url + "/api/explain", files={"file": ("x.png", png_of(image))},
                          data={"target": target, "format": "png"}, timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
        pred = run.class_names[int(run.preds[i])]
        assert r.headers["X-Prediction"] == "?"  # printable-ASCII fallback
        assert r.headers["X-Prediction*"].startswith("UTF-8''")
        assert unquote(r.headers["X-Prediction*"][len("UTF-8''"):]) == pred
    assert unquote(r.headers["X-Target*"][len("UTF-8''"):]) == "Ωmega\r\nX-Evil: 1"
    assert r.headers["X-Target"] == "?mega??X-Evil: 1" and "X-Evil" not in r.headers


# ------------------------------------------------------------------ security headers on every kind of response

def test_security_headers_everywhere(demo_store):
    from xai_dashboard.app import create_app

    app = create_app(store=demo_store)
    client = app.server.test_client()
    page = client.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' " in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    for digest in app.csp_hashes():  # Dash's own inline scripts are allowed by hash, nothing else is
        assert digest in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    run = demo_store.default
    for path in ("/", "/_dash-layout", "/api/runs", "/api/nothing", f"/img/{run}/0.png", "/img/nope.png",
                 "/assets/style.css"):
        r = client.get(path)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["X-Frame-Options"] == "DENY", path
        assert r.headers["Referrer-Policy"] == "same-origin", path
        assert r.headers["Content-Security-Policy"] == csp, path


def test_unmatched_image_urls_are_404_not_the_page(demo_store):
    from xai_dashboard.app import create_app

    client = create_app(store=demo_store).server.test_client()
    assert client.get(f"/img/{demo_store.default}/0.png").status_code == 200
    for path in ("/img/", "/img/x", f"/img/{demo_store.default}/abc.png", f"/img/{demo_store.default}/0.jpg",
                 "/img/a/b/c.png"):
        r = client.get(path)
        assert r.status_code == 404 and b"_dash-config" not in r.data, path
    assert client.get("/some/page").status_code == 200  # Dash's own catch-all still serves the app
