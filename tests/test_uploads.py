"""Safe decoding of uploads: every image mode handled like the run's preprocessing, every bad
input refused with its status and message (directly and through the Dash upload callback's
pure function)."""
from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from trainer.preprocess import pil_to_array
from xai_dashboard import uploads
from xai_dashboard.uploads import UploadError, decode_image
from xai_dashboard.views.explain_model import source_image, upload_to_source

META3 = {"input_size": 32, "in_channels": 3}
META1 = {"input_size": 32, "in_channels": 1}
RNG = np.random.default_rng(0)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(w: int = 90, h: int = 60) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def good_images() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    palette = Image.fromarray(RNG.integers(0, 4, (50, 70), dtype=np.uint8), mode="L").convert("P")
    rgba = rgb(64, 48).convert("RGBA")
    rgba.putalpha(Image.fromarray(RNG.integers(0, 256, (48, 64), dtype=np.uint8)))
    return {
        "rgb.png": encode(rgb()),
        "rgba.png": encode(rgba),
        "grey.png": encode(rgb().convert("L")),
        "palette.png": encode(palette, transparency=0),
        "16bit.png": encode(Image.fromarray((RNG.random((40, 50)) * 65535).astype(np.uint16))),
        "la.png": encode(rgb().convert("LA")),
        "exif.jpg": encode(rgb(80, 40), "JPEG", exif=exif),
        "cmyk.jpg": encode(rgb().convert("CMYK"), "JPEG"),
        "lossless.webp": encode(rgb(33, 77), "WEBP", lossless=True),
        "large.jpg": encode(rgb(2000, 1500), "JPEG", quality=80),
        "tiny.png": encode(rgb(1, 1)),
    }


@pytest.mark.parametrize("name", list(good_images()))
@pytest.mark.parametrize("meta", [META3, META1], ids=["rgb", "grey"])
def test_good_images_follow_the_run_preprocessing(name, meta):
    data = good_images()[name]
    got = decode_image(data, meta)
    want = pil_to_array(Image.open(io.BytesIO(data)), meta["input_size"], meta["in_channels"])
    assert got.shape == (meta["in_channels"], 32, 32) and got.dtype == want.dtype
    assert (got == want).all()


def test_exif_rotation_is_applied():
    img = rgb(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = decode_image(encode(img, "JPEG", exif=exif, quality=95), META3)
    plain = decode_image(encode(img, "JPEG", quality=95), META3)
    upright = decode_image(encode(img.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95), META3)
    def diff(a, b):
        return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()

    assert diff(rotated, upright) < diff(rotated, plain)


def bad_inputs() -> dict[str, tuple[bytes, int, str]]:
    """name -> (bytes, expected status, expected words in the message)."""
    good = encode(rgb())
    return {
        "empty.png": (b"", 400, "empty"),
        "truncated.png": (good[: len(good) // 2], 400, "truncated"),
        "random.png": (RNG.bytes(4096), 415, "PNG, JPEG or WebP"),
        "notes.txt": (b"just some text\n" * 20, 415, "PNG, JPEG or WebP"),
        "drawing.svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
                        b'<rect width="9" height="9"/></svg>', 415, "SVG"),
        "anim.gif": (encode(rgb(8, 8).convert("P"), "GIF"), 415, "GIF"),
        "bomb.png": (png_declaring(10_000, 10_000), 400, "pixels"),
        "bomb60.png": (png_declaring(10_000, 6_000), 400, "megapixel"),
        "huge.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 2**20), 413, "limit"),
        "badheader.jpg": (b"\xff\xd8\xff\xe0" + b"\0" * 64, 400, "JPEG"),
    }


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_inputs_are_refused(name):
    data, status, words = bad_inputs()[name]
    start = time.perf_counter()
    with pytest.raises(UploadError) as e:
        decode_image(data, META3)
    assert time.perf_counter() - start < 1.0
    assert e.value.status == status and words.lower() in str(e.value).lower(), str(e.value)


def test_bomb_is_rejected_without_decoding(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("bomb pixels were decoded"))
    for w, h in ((10_000, 10_000), (8_000, 7_000)):
        start = time.perf_counter()
        with pytest.raises(UploadError) as e:
            decode_image(png_declaring(w, h), META3)
        assert e.value.status == 400 and time.perf_counter() - start < 1.0


def test_size_limit_and_data_urls(monkeypatch):
    good = encode(rgb())
    assert uploads.parse_data_url(data_url(good)) == good
    with pytest.raises(UploadError) as e:
        uploads.parse_data_url(data_url(good), max_bytes=100)
    assert e.value.status == 413
    for empty in ("", None, "data:", "data:image/png;base64,"):
        with pytest.raises(UploadError, match="empty"):
            uploads.parse_data_url(empty)
    with pytest.raises(UploadError, match="base64"):
        uploads.parse_data_url("data:image/png;base64,@@@@")
    monkeypatch.setenv(uploads.MAX_BYTES_ENV, "0.001")
    assert uploads.max_upload_bytes() == int(0.001 * 2**20)
    with pytest.raises(UploadError) as e:
        decode_image(good, META3)
    assert e.value.status == 413


@pytest.fixture(scope="module")
def demo_run(demo_store):
    return demo_store.get(None)


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_upload_callback_reports_bad_inputs(demo_run, name):
    data, _status, words = bad_inputs()[name]
    source, message = upload_to_source(data_url(data), name, demo_run)
    assert source is None
    assert message.startswith(f"{name}: ") and words.lower() in message.lower()


def test_upload_callback_accepts_good_images_and_keeps_names_as_text(demo_store, demo_run):
    name = '<img src=x onerror="alert(1)">.png'
    source, message = upload_to_source(data_url(encode(rgb())), name, demo_run)
    assert message == "" and source["kind"] == "upload" and source["name"] == name
    run, image, index, description = source_image(demo_store, source)
    assert run is demo_run and index is None and tuple(image.shape) == (1, 32, 32)
    assert description == f"Upload: {name}"  # a plain string: Dash renders it as text, never HTML
    _, message = upload_to_source(data_url(b"junk"), name, demo_run)
    assert message.startswith(name)
