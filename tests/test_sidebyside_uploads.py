"""Side by side's upload: a file checked once where it enters (decoded as the explanations tab decodes it),
one message for a bad one and the grid's image kept, not the same error in every run's row; files the
browser drops (a type outside ``accept``, over the size limit) said in the page as on the explanations tab.

The request bodies are built as the renderer sends them (tests/test_callback_inputs.py's style)."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.test_sidebyside import _choose_payload
from xai_dashboard.app import create_app


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png(size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk as the PNG specification lays it out: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb(side: int = 20000) -> bytes:
    """A valid PNG header declaring ``side`` x ``side`` 8-bit grey pixels, with one tiny compressed row."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * (side + 1))) \
        + _chunk(b"IEND", b"")


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "GIF")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client_app(demo_store):
    app = create_app(store=demo_store)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    return app, client


def _upload(app, client, contents: str, filename: str):
    body = _choose_payload(app, 0, None)  # the source callback's body, its upload fired instead of a link
    body["changedPropIds"] = ["sbs-upload.contents"]
    values = {("sbs-link", "data"): None, ("sbs-upload", "contents"): contents, ("sbs-upload", "filename"): filename}
    for entry in body["inputs"] + body["state"]:
        entry["value"] = values.get((entry["id"], entry["property"]), entry["value"])
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.data[:300]
    return r.get_json()["response"]


@pytest.mark.parametrize("name, data, why", [
    ("truncated.png", _png()[:300], "truncated"),
    ("bomb.png", _bomb(), "image rejected"),
    ("img.gif", _gif(), "unsupported file type (GIF)"),
    ("empty.png", b"", "empty"),
])
def test_a_bad_upload_is_one_message_and_the_grid_keeps_its_image(client_app, name, data, why):
    app, client = client_app
    response = _upload(app, client, _data_url(data), name)
    assert "sbs-source" not in response  # the previous image stays the grid's source
    error = json.dumps(response["sbs-error"])
    assert f"{name}: " in error and why in error


def test_a_good_upload_becomes_the_source_and_clears_the_error(client_app):
    app, client = client_app
    contents = _data_url(_png())
    response = _upload(app, client, contents, "good.png")
    assert response["sbs-source"]["data"] == {"kind": "upload", "name": "good.png", "contents": contents}
    assert response["sbs-error"]["children"] == ""


def test_files_the_browser_drops_are_said_by_the_same_guard_as_on_the_explanations_tab(client_app):
    """dcc.Upload drops a file outside ``accept`` or over ``max_size`` without a request; both upload areas
    have the guard that says so (views.explain_source.UPLOAD_GUARD_JS), each in its own error line."""
    app, _ = client_app
    guards = {c["output"]: c["inputs"][0]["id"] for c in app._callback_list if c.get("clientside_function")}
    assert guards["sbs-upload-guard.data"] == "sbs-upload-limit"
    assert guards["xp-upload-guard.data"] == "xp-upload-limit"
    from xai_dashboard.app import components

    data = {c.id: c.data for c in components(app.layout) if getattr(c, "id", "") in ("sbs-upload-limit",
                                                                                      "xp-upload-limit")}
    assert data["sbs-upload-limit"]["upload"] == "sbs-upload" and data["sbs-upload-limit"]["error"] == "sbs-error"
    assert data["xp-upload-limit"]["upload"] == "upload-image" and data["xp-upload-limit"]["error"] == "upload-error"


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_gif_on_side_by_side_is_said_in_the_page(dash_duo, demo_store, tmp_path):
    from selenium.webdriver.common.by import By

    gif = tmp_path / "img.gif"
    gif.write_bytes(_gif())
    dash_duo.start_server(create_app(store=demo_store))
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.wait_for_element("#run-select", timeout=60)
    dash_duo.driver.find_element(By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Side by side']").click()
    dash_duo.driver.find_element(By.CSS_SELECTOR, "#sbs-upload input[type=file]").send_keys(str(gif))
    dash_duo.wait_for_text_to_equal("#sbs-error", "img.gif: unsupported file type; upload a PNG, JPEG or WebP image",
                                    timeout=60)
