"""Thumbnails, PNG encoding, content-keyed caching and the /img route."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from xai_dashboard import images


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_to_hwc_handles_rgb_and_grey():
    rgb = torch.arange(3 * 4 * 5, dtype=torch.uint8).view(3, 4, 5)
    assert images.to_hwc(rgb).shape == (4, 5, 3)
    assert images.to_hwc(rgb)[1, 2, 0] == rgb[0, 1, 2]
    assert images.to_hwc(np.zeros((1, 8, 8), np.uint8)).shape == (8, 8)
    with pytest.raises(TypeError):
        images.to_hwc(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError):
        images.to_hwc(np.zeros((2, 8, 8), np.uint8))


def test_whole_factor_upscaling_is_nearest_neighbour_and_png_is_lossless():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = _decode(images.encode_png(images.upscale(x, 96)))
    assert big.shape == (96, 96, 3)
    assert np.array_equal(big, x.repeat(3, axis=0).repeat(3, axis=1))
    assert _decode(images.encode_png(images.upscale(x, 80))).shape == (80, 80, 3)  # bilinear path


def test_thumbnails_are_cached_by_content_not_object():
    px = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a, b = images.ImageSet("fp-test", px), images.ImageSet("fp-test", px.clone())
    first = images.thumbnail_bytes(a, 2, 96)
    assert images.thumbnail_bytes(b, 2, 96) is first
    assert np.array_equal(_decode(first)[::3, ::3], images.to_hwc(px[2]))


def test_clamp_size():
    assert images.clamp_size(None) == images.THUMB_SIZE
    assert images.clamp_size("abc") == images.THUMB_SIZE
    assert images.clamp_size(10**6) == images.MAX_SIZE and images.clamp_size(1) == images.MIN_SIZE


def test_image_url_quotes_the_run_name():
    url = images.image_url("/", "my run/v2", 7, 96, "abc")
    assert url == "/img/my%20run%2Fv2/7.png?size=96&v=abc"


@pytest.fixture
def client():
    """The /img route on a bare Flask app over a tiny in-memory store."""
    from flask import Flask

    px = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    run = SimpleNamespace(images=px, meta={"dataset": {"fingerprint": "fp-route"}})

    class Store:
        def get(self, name):
            if name != "demo":
                raise KeyError(name)
            return run

    app = Flask(__name__)
    images.register_image_route(app, Store())
    return app.test_client(), px


def test_route_serves_cacheable_pngs(client):
    c, px = client
    r = c.get("/img/demo/3.png?size=96&v=fp-route")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert np.array_equal(_decode(r.data)[::3, ::3], images.to_hwc(px[3]))
    etag = r.headers["ETag"]
    assert "fp-route" in etag and "immutable" in r.headers["Cache-Control"]
    again = c.get("/img/demo/3.png?size=96&v=fp-route", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.data
    assert "no-cache" in c.get("/img/demo/3.png").headers["Cache-Control"]  # unversioned URL: revalidate


def test_route_rejects_unknown_runs_and_indices(client):
    c, _ = client
    assert c.get("/img/nope/0.png").status_code == 404
    assert c.get("/img/demo/5.png").status_code == 404
    assert c.get("/img/demo/-1.png").status_code == 404
    assert _decode(c.get("/img/demo/0.png?size=99999").data).shape[0] == images.MAX_SIZE


def test_route_404s_every_other_img_url_and_shortens_what_it_echoes(client):
    c, _ = client
    for path in ("/img/", "/img/demo", "/img/demo/abc.png", "/img/demo/1.jpg", "/img/a/b/1.png"):
        assert c.get(path).status_code == 404, path
    r = c.get("/img/" + "n" * 60_000 + "/0.png")
    assert r.status_code == 404 and b"n" * 80 + b"... (60,000 characters)" in r.data and b"n" * 81 not in r.data


def test_shown_shortens_long_values():
    assert images.shown("short") == "short"
    assert images.shown("x" * 81) == "x" * 80 + "... (81 characters)"


def test_byte_lru_is_bounded_in_bytes_and_keeps_recent_entries():
    lru = images.ByteLRU(1000)
    for i in range(10):
        lru.put(i, bytes(300))
        assert lru.nbytes <= 1000
    assert len(lru) == 3 and lru.get(0) is None and lru.get(9) is not None
    lru.get(7)  # touched: survives the next insertion, 8 (least recent) does not
    lru.put("new", bytes(300))
    assert lru.get(7) is not None and lru.get(8) is None
    lru.put("huge", bytes(5000))  # larger than the whole budget: not kept, nothing evicted
    assert lru.get("huge") is None and len(lru) == 3
    lru.put("new", bytes(10))  # replacing an entry accounts for the old size
    assert lru.nbytes == 610


def test_thumbnail_cache_stays_within_its_byte_budget(monkeypatch):
    monkeypatch.setattr(images, "THUMBNAILS", images.ByteLRU(2 * 2**20))
    px = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    data = images.ImageSet("fp-budget", px)
    sizes = [len(images.thumbnail_bytes(data, i, 500)) for i in range(40)]  # noisy 500 px PNGs, ~100+ KB each
    assert sum(sizes) > 4 * 2**20  # more than twice the budget went through the cache ...
    assert images.THUMBNAILS.nbytes <= 2 * 2**20 and len(images.THUMBNAILS) < 40  # ... and it kept under it
