"""``/img`` URLs name the format they serve: ``.png`` is always a PNG, ``.jpg`` a JPEG (an image folder's
photos only); the probe found an image folder's JPEG thumbnails served at ``<i>.png``."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from test_scale import isolated_caches, make_folder_run  # noqa: F401  (isolated_caches is a fixture)

from tests.conftest import CHECKPOINTS
from xai_dashboard import images
from xai_dashboard.app import create_app
from xai_dashboard.store import RunStore


def test_an_image_folders_thumbnails_at_png_and_jpg(tmp_path, isolated_caches):  # noqa: F811
    app = create_app([make_folder_run(tmp_path, 12)])
    client, run = app.server.test_client(), app.server.config["XAI_STORE"].get(None)
    fp = run.meta["dataset"]["fingerprint"]
    png, jpg = (client.get(f"/img/{run.name}/4.{ext}?size=32") for ext in ("png", "jpg"))
    assert png.status_code == jpg.status_code == 200
    assert png.mimetype == "image/png" and Image.open(io.BytesIO(png.data)).format == "PNG"
    assert jpg.mimetype == "image/jpeg" and Image.open(io.BytesIO(jpg.data)).format == "JPEG"
    assert png.headers["ETag"] != jpg.headers["ETag"]
    original = np.asarray(Image.open(run.images.path(4)).convert("RGB").resize((32, 20)), np.int16)
    for r in (png, jpg):  # the same photo, shrunk the same way
        assert np.abs(np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"), np.int16) - original).mean() < 6
    url = images.image_url("/", run.name, 4, 32, fp, fmt=images.thumbnail_format(run))
    assert url == f"/img/{run.name}/4.jpg?size=32&v={fp}"
    assert client.get(url).data == jpg.data


def test_the_network_pixels_are_png_only():
    client = create_app(store=RunStore.from_dirs([CHECKPOINTS / "digits-demo"])).server.test_client()
    store_run = "digits-demo"
    png = client.get(f"/img/{store_run}/0.png?size=32")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    jpg = client.get(f"/img/{store_run}/0.jpg?size=32")
    assert jpg.status_code == 404 and b"PNG only" in jpg.data


def test_the_pages_ask_an_image_folder_for_its_compact_format(tmp_path, isolated_caches):  # noqa: F811
    """Galleries, details, the map's hover and the stress pairs build their URLs with test_image_url: JPEG for
    photos (a 256 px PNG of a photo is ~12x the bytes), PNG for the network's pixels; every such URL answers."""
    from xai_dashboard.views import gallery_item

    app = create_app([make_folder_run(tmp_path, 12)])
    client, run = app.server.test_client(), app.server.config["XAI_STORE"].get(None)
    src = gallery_item("/", run, 3, caption=[], wrong=False).children[0].src
    assert src.split("?")[0] == f"/img/{run.name}/3.jpg"
    answer = client.get(src)
    assert answer.status_code == 200 and answer.mimetype == "image/jpeg"
    demo = create_app(store=RunStore.from_dirs([CHECKPOINTS / "digits-demo"]))
    demo_run = demo.server.config["XAI_STORE"].get(None)
    src = gallery_item("/", demo_run, 3, caption=[], wrong=False).children[0].src
    assert src.split("?")[0] == "/img/digits-demo/3.png" and demo.server.test_client().get(src).status_code == 200
