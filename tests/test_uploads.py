"""Safe decoding of uploads: every image mode handled like the run's preprocessing, every bad
input refused with its status and message (directly and through the Dash upload callback's
pure function)."""
from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

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


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 16 x 16 JPEG whose frame header is patched to claim width x height: ~800 bytes of
    data for 49 megapixels, which libjpeg would "decode" by padding with grey."""
    data = bytearray(encode(rgb(16, 16), "JPEG"))
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):  # walk the segments to the frame header
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


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
    jpeg, webp = encode(rgb(400, 300), "JPEG"), encode(rgb(400, 300), "WEBP")
    progressive = encode(rgb(400, 300), "JPEG", progressive=True)
    return {
        "empty.png": (b"", 400, "empty"),
        "truncated.png": (good[: len(good) // 2], 400, "truncated"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], 400, "truncated"),
        "truncated-progressive.jpg": (progressive[: len(progressive) // 2], 400, "truncated"),
        "truncated.webp": (webp[: len(webp) // 2], 400, "corrupt"),
        "claims7000.jpg": (jpeg_declaring(7000, 7000), 400, "cannot hold the 7000x7000 pixels"),
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
    with pytest.raises(UploadError) as e:
        decode_image(data, META3)
    assert e.value.status == status and words.lower() in str(e.value).lower(), str(e.value)


def test_bomb_is_rejected_without_decoding(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("bomb pixels were decoded"))
    for w, h in ((10_000, 10_000), (8_000, 7_000)):
        with pytest.raises(UploadError) as e:
            decode_image(png_declaring(w, h), META3)
        assert e.value.status == 400
    with pytest.raises(UploadError) as e:
        decode_image(jpeg_declaring(7000, 7000), META3)
    assert e.value.status == 400 and "truncated or damaged" in str(e.value)


def test_memory_budget_is_checked_before_decoding(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("over-budget pixels were decoded"))
    rgba = encode(Image.new("RGBA", (1000, 1000)))  # 4 bytes a pixel + a premultiplied copy: 8 MB
    with pytest.raises(UploadError) as e:
        decode_image(rgba, META3, max_decode=7 * 2**20)
    assert e.value.status == 413 and "would take 8 MB" in str(e.value) and "limit is 7 MB" in str(e.value)
    monkeypatch.setenv(uploads.MAX_DECODE_ENV, "2")
    with pytest.raises(UploadError, match="limit is 2 MB"):
        decode_image(encode(Image.new("L", (1500, 1500))), META3)


def test_jpegs_are_budgeted_at_their_draft_scale(monkeypatch):
    """A 4000 x 3000 JPEG needs 48 MB decoded in full, but only 0.8 MB at the 1/8 scale a 32 px run needs."""
    big = encode(rgb(4000, 3000), "JPEG", quality=30)
    assert decode_image(big, META3, max_decode=2**20).shape == (3, 32, 32)
    with pytest.raises(UploadError) as e:
        decode_image(big, {"input_size": 1000, "in_channels": 3}, max_decode=2**20)
    assert e.value.status == 413


def test_truncated_images_stay_refused_after_importing_everything():
    import trainer.cli  # noqa: F401 - anything that might flip Pillow's global
    import xai_dashboard.app  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    good = encode(rgb())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
            decode_image(good, META3)


def test_busy_decoder_answers_503(monkeypatch):
    monkeypatch.setattr(uploads, "DECODE_WAIT_S", 0.05)
    memory = uploads.DecodeMemory(2**20, slots=1)
    monkeypatch.setattr(uploads, "_DECODE_MEMORY", memory)
    with memory.hold(1, 1.0):  # another request is decoding
        with pytest.raises(UploadError) as e:
            decode_image(encode(rgb()), META3)
        assert e.value.status == 503 and "busy" in str(e.value)
    assert decode_image(encode(rgb()), META3).shape == (3, 32, 32)
    assert (memory.held, memory.running) == (0, 0)  # given back


def test_a_workers_decodes_share_one_memory_budget(monkeypatch):
    """Two uploads that each fit the budget but not together: the second waits for the first (503 past
    the wait) while a small image, which fits beside it, decodes at once."""
    monkeypatch.setattr(uploads, "DECODE_WAIT_S", 0.05)
    memory = uploads.DecodeMemory(6 * 2**20, slots=2)
    monkeypatch.setattr(uploads, "_DECODE_MEMORY", memory)
    big = encode(rgb(1000, 1000))  # RGB decodes at 4 bytes a pixel: 3.8 MB
    with memory.hold(4 * 2**20, 1.0):  # such a decode in progress; one of two slots taken
        with pytest.raises(UploadError) as e:
            decode_image(big, META3)
        assert e.value.status == 503 and "busy" in str(e.value)
        assert decode_image(encode(rgb()), META3).shape == (3, 32, 32)  # 90 x 60: 21 KB
    assert decode_image(big, META3).shape == (3, 32, 32)


def test_a_large_decode_waiting_for_room_is_not_overtaken_by_a_small_one():
    memory, started = uploads.DecodeMemory(10, slots=2), []

    def decode(name: str, need: int) -> None:
        with memory.hold(need, 10.0):
            started.append(name)

    with memory.hold(5, 1.0):  # a decode in progress: the large one does not fit beside it, the small one would
        waiting = [threading.Thread(target=decode, args=("large", 8))]
        waiting[0].start()
        wait_for(lambda: len(memory._line) == 1)
        waiting.append(threading.Thread(target=decode, args=("small", 4)))  # it came later
        waiting[1].start()
        wait_for(lambda: len(memory._line) == 2)
        assert started == []
    for t in waiting:
        t.join(10)
    assert started == ["large", "small"] and (memory.held, memory.running) == (0, 0)


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_16bit_greyscale_is_rescaled_like_the_float_reference():
    rng = np.random.default_rng(3)
    arr = (rng.random((300, 200)) * 4000).astype(np.uint16)  # 12-bit data in a 16-bit PNG
    img = Image.fromarray(arr)
    want = Image.fromarray((arr * (255.0 / arr.max())).astype(np.uint8))
    got = pil_to_array(img, 32, 1)
    ref = pil_to_array(want, 32, 1)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 2  # reduce-then-scale vs scale-then-reduce


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_shrinking_first_matches_a_direct_resize(fmt):
    """Draft/reduce before the resize keep 8x the input size, so a large photo gives what resizing
    the whole decoded image (the preprocessing runs were trained with) gives, within 1 grey level."""
    y, x = np.mgrid[0:1500, 0:2000]
    photo = np.stack([(np.sin(x / 50) + 1) * 120, (np.cos(y / 70) + 1) * 120, (x + y) / 3500 * 255], -1)
    data = encode(Image.fromarray(photo.astype(np.uint8)), fmt)
    for size, mode in ((32, "RGB"), (32, "L"), (64, "RGB")):
        full = Image.open(io.BytesIO(data)).convert(mode)  # decoded in full, then resized once
        want = np.asarray(ImageOps.fit(full, (size, size), method=Image.Resampling.BILINEAR), dtype=int)
        got = decode_image(data, {"input_size": size, "in_channels": len(mode)}).transpose(1, 2, 0)
        got = got[:, :, 0] if mode == "L" else got
        assert np.abs(got.astype(int) - want).max() <= 1, (size, mode)


# Each measurement in a fresh interpreter, its peak read from VmHWM (the high-water RSS of this process's
# own memory map). Not ru_maxrss: Linux carries that over from the parent through fork and exec, and
# the parent (pytest, which just built 7000 x 7000 arrays) is bigger than the child ever gets.
_MEASURE = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from xai_dashboard import uploads
uploads.hand_back_freed_images()  # as the server (xai_dashboard.wsgi) does
def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
data, uploads_at_once = open(sys.argv[1], "rb").read(), int(sys.argv[2])
before = hwm()
with ThreadPoolExecutor(uploads_at_once) as pool:  # each on its own thread, as a worker's requests are
    shapes = list(pool.map(lambda _: list(uploads.decode_image(data, {"input_size": 32, "in_channels": 3}).shape),
                           range(uploads_at_once)))
print(json.dumps({"shapes": shapes, "mb": hwm() - before}))
"""


def worst_case_uploads() -> dict[str, bytes]:
    """The issue's 95 KB 16-bit 7000 x 7000 PNG, and RGB/RGBA PNGs just inside the default decode budget."""
    deep = np.zeros((7000, 7000), np.uint16)
    deep[:100, :100] = 60000
    budget = uploads.DEFAULT_DECODE_MB * 2**20
    side_rgb, side_rgba = int((budget / 4) ** 0.5) - 8, int((budget / 8) ** 0.5) - 8
    return {"16bit-7000.png": encode(Image.fromarray(deep), compress_level=9),
            "rgb-budget.png": encode(Image.new("RGB", (side_rgb, side_rgb), (200, 30, 30)), compress_level=9),
            "rgba-budget.png": encode(Image.new("RGBA", (side_rgba, side_rgba), (0, 0, 255, 90)), compress_level=9)}


@pytest.mark.parametrize("name,at_once", [("16bit-7000.png", 1), ("rgb-budget.png", 1), ("rgba-budget.png", 1),
                                          ("rgb-budget.png", 2)])  # two at once share one process's budget
def test_worst_case_accepted_uploads_peak_under_200_mb(name, at_once, tmp_path):
    data = worst_case_uploads()[name]
    assert len(data) < 200 * 1024  # tiny files: the cost is all in the pixels they declare
    (tmp_path / name).write_bytes(data)
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / name), str(at_once)], cwd=root,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["shapes"] == [[3, 32, 32]] * at_once
    assert 20 <= result["mb"] <= 200, result  # >= 20: the pixels really were decoded and measured


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
