"""Safe decoding of user images: bytes -> the network's uint8 input ``(C, S, S)``.

Defences, in the order they run (each failure is an :class:`UploadError` with
the HTTP status the API answers with):

* size: empty -> 400, over ``max_bytes`` (10 MB default) -> 413, checked before
  any parsing (for dcc.Upload's base64 too, before decoding it);
* format: Pillow may only try PNG, JPEG and WebP (``formats=``), so SVG, text,
  GIF, random bytes ... -> 415, and no other decoder ever sees the bytes;
* decompression bombs: the header's width x height is checked against
  ``max_pixels`` *before* ``load()`` -> 400 in well under a second, and
  Pillow's DecompressionBombWarning is raised as an error as a second line;
* memory: what decoding and preprocessing will hold (header size x bytes a
  pixel, after a JPEG's ``draft`` scale-down) must fit ``$XAI_MAX_DECODE_MB``
  (160 MB default) -> 413 before a pixel is decoded;
* a JPEG too short to hold the pixels it declares (libjpeg would pad it with
  grey and the model would classify the padding) -> 400;
* memory and concurrency per process (per gunicorn worker): its decodes share
  one ``$XAI_MAX_DECODE_MB`` between them, at most ``$XAI_MAX_DECODES`` (2) run
  at once, and they start in arrival order (:class:`DecodeMemory`); one that
  cannot start within ``DECODE_WAIT_S`` gets 503. The header checks above run
  before the wait, so a refused file never queues;
* corrupt or truncated data -> 400 (Pillow raises while decoding; that needs
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` False, which is checked).

The image then goes through :func:`trainer.preprocess.pil_to_array` with the
run's ``input_size``/``in_channels``: EXIF rotation, RGBA over white, palette,
16-bit and greyscale handling, shorter-side resize and centre crop, exactly as
the run's own images were prepared.
"""
from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import io
import math
import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from trainer.preprocess import decode_bytes, draft_for, pil_to_array

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_BYTES_ENV = "XAI_MAX_UPLOAD_MB"
DEFAULT_MAX_MB = 10
MAX_PIXELS = 50_000_000  # ~8K x 6K; far below what a 10 MB file could declare in a bomb
MAX_DECODE_ENV, DEFAULT_DECODE_MB = "XAI_MAX_DECODE_MB", 160  # + interpreter overhead stays < 200 MB
MAX_DECODES_ENV, DEFAULT_DECODES = "XAI_MAX_DECODES", 2
DECODE_WAIT_S = 30.0  # a queued upload waits this long for a decode slot, then gets 503
ACCEPT = "image/png,image/jpeg,image/webp,.png,.jpg,.jpeg,.webp"

# Magic numbers of formats people commonly try, only to word the 415 message.
_SNIFF = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"%PDF", "PDF"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"),
          (b"<svg", "SVG"), (b"<?xml", "XML/SVG"), (b"\0\0\1\0", "ICO"))


class UploadError(ValueError):
    """An upload that cannot be used; ``status`` is 400, 413, 415 or 503."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _env_number(name: str, default: float) -> float:
    """A positive number from the environment; ``default`` when unset, unparsable or <= 0."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def max_upload_bytes() -> int:
    """The upload limit in bytes: ``$XAI_MAX_UPLOAD_MB`` (default 10 MB)."""
    return int(_env_number(MAX_BYTES_ENV, DEFAULT_MAX_MB) * 2**20)


def max_decode_bytes() -> int:
    """Memory one decode may hold: ``$XAI_MAX_DECODE_MB`` (default 160 MB)."""
    return int(_env_number(MAX_DECODE_ENV, DEFAULT_DECODE_MB) * 2**20)


class DecodeMemory:
    """What one process's decodes may hold at once: ``capacity`` bytes between them and at most ``slots``
    decodes, granted in arrival order.

    Why bytes and not only a count: two slots of a full decode budget each let a worker hold 2 x 160 MB
    of pixels (``bench/upload_memory.py``, 2 workers, 8 worst-case uploads at once: peak summed RSS
    2.36 GB, PSS 1.22 GB; sharing one budget, with :func:`hand_back_freed_images`: 2.04 and 0.92 GB).
    Sharing one budget keeps a worker's decoding within what one upload may take, while small images
    (a 32 px PNG needs 4 KB) still decode beside a large one. In arrival order, so a large upload
    waiting for room is not overtaken for ever by a stream of small ones.
    """

    def __init__(self, capacity: int, slots: int):
        self.capacity, self.slots = capacity, slots
        self._cond = threading.Condition()
        self._line: collections.deque = collections.deque()  # waiting decodes' tickets, first come first
        self.held, self.running = 0, 0

    @contextlib.contextmanager
    def hold(self, need: int, timeout: float):
        """Wait up to ``timeout`` s until this decode is first in line and ``need`` bytes and a slot are free
        (then hold them until the block ends), else :class:`UploadError` 503. A ``need`` over the capacity
        (a caller's own larger ``max_decode``) holds all of it."""
        need, ticket = min(need, self.capacity), object()
        with self._cond:
            self._line.append(ticket)
            try:
                granted = self._cond.wait_for(lambda: self._line[0] is ticket and self.running < self.slots
                                              and self.held + need <= self.capacity, timeout)
            finally:
                self._line.remove(ticket)
                self._cond.notify_all()  # the next in line may start now, or no longer waits behind this one
            if not granted:
                raise UploadError("the server is busy decoding other uploads; retry in a few seconds", 503)
            self.held, self.running = self.held + need, self.running + 1
        try:
            yield
        finally:
            with self._cond:
                self.held, self.running = self.held - need, self.running - 1
                self._cond.notify_all()


# Per process (each gunicorn worker after the fork): its decodes' memory, whatever their number.
_DECODE_MEMORY = DecodeMemory(max_decode_bytes(), int(_env_number(MAX_DECODES_ENV, DEFAULT_DECODES)))


LARGE_BLOCK = 4 * 2**20


def hand_back_freed_images() -> bool:
    """Make glibc give every allocation of ``LARGE_BLOCK`` (4 MB) or more its own mapping, returned to the
    kernel when freed; for the web server's processes (:mod:`.wsgi`). Returns whether it applied (glibc only).

    Why: glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so from the
    second decoded upload on, Pillow's image blocks (up to 16 MB) come from the heap of the thread that decodes
    and stay resident after the image is freed. Decodes on two request threads one after the other then
    held 2 x 160 MB in one worker (``bench/upload_memory.py``), although :class:`DecodeMemory` lets them
    hold 160 MB at once. A fixed threshold ends the adjustment. The price: other blocks this large (a
    batched attribution's activations; a 32 px prediction's tensors are well under 1 MB) are mapped
    afresh each time, a page fault per 4 KB.
    """
    from trainer.runtime import M_MMAP_THRESHOLD, mallopt  # imports torch: not at start-up (tests/test_startup.py)

    return mallopt((M_MMAP_THRESHOLD, LARGE_BLOCK))


def _human(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def check_size(n: int, max_bytes: int) -> None:
    if n == 0:
        raise UploadError("the file is empty", 400)
    if n > max_bytes:
        raise UploadError(f"the file is {n:,} bytes; the limit is {max_bytes:,} bytes ({_human(max_bytes)})", 413)


def _unsupported(data: bytes) -> UploadError:
    if _fmt(data) != "image":  # right magic number, unreadable header: broken, not unsupported
        return UploadError(f"corrupt {_fmt(data)} file: its header cannot be read", 400)
    head = data[:256].lstrip().lower()
    kind = next((name for magic, name in _SNIFF if head.startswith(magic.lower())), None)
    if kind is None and b"<svg" in head:
        kind = "SVG"
    what = f"unsupported file type ({kind})" if kind else "unsupported file: not a PNG, JPEG or WebP image"
    return UploadError(f"{what}; upload a PNG, JPEG or WebP image", 415)


def _open(data: bytes) -> Image.Image:
    """Parse the header only (nothing decoded yet); unknown formats -> 415, broken headers -> 400."""
    try:
        return Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        raise _unsupported(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError("image rejected: it declares too many pixels (decompression bomb?)", 400) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UploadError(f"corrupt {_fmt(data)} header: {e}", 400) from None


# Huffman-coded frames (baseline, extended, progressive); arithmetic coding has no per-block minimum.
_HUFFMAN_SOF = (0xC0, 0xC1, 0xC2)


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker byte of a JPEG (walking the segments after SOI), None if not found."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # DHT, JPG, DAC are not frames
            return marker
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _check_jpeg_length(img: Image.Image, data: bytes) -> None:
    """Huffman coding spends >= 1 bit on the DC coefficient of every 8x8 luma block, so a file with
    fewer bits than blocks cannot hold the image its header declares: libjpeg would pad the missing
    data with grey (only a warning) and the model would classify the padding."""
    if img.format != "JPEG" or _jpeg_frame_marker(data) not in _HUFFMAN_SOF:
        return
    w, h = img.size
    _, hs, vs, _ = img.layer[0]  # (component id, horizontal sampling, vertical sampling, table)
    hmax, vmax = max(c[1] for c in img.layer), max(c[2] for c in img.layer)
    blocks = math.ceil(math.ceil(w * hs / hmax) / 8) * math.ceil(math.ceil(h * vs / vmax) / 8)
    if len(data) * 8 < blocks:
        raise UploadError(f"corrupt JPEG: {len(data):,} bytes cannot hold the {w}x{h} pixels its header "
                          f"declares (that needs at least {blocks // 8:,} bytes); the file is truncated or damaged")


def _check_memory(img: Image.Image, budget: int) -> int:
    """The bytes decoding and preprocessing ``img`` will hold; 413 when over ``budget``."""
    need = decode_bytes(img.mode, img.size)
    if need > budget:
        w, h = img.size
        raise UploadError(f"image rejected: decoding this {w}x{h} {img.format} ({img.mode}) would take "
                          f"{need / 2**20:.0f} MB of memory; the limit is {budget / 2**20:.0f} MB, "
                          "so downscale it and retry", 413)
    return need


def _load(img: Image.Image) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # fail closed: someone's import turned Pillow's guard off
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated uploads would be accepted")
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError("image rejected: it declares too many pixels (decompression bomb?)", 400) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise UploadError(f"corrupt or truncated {img.format} image: {e}", 400) from None


def _check_header(img: Image.Image, data: bytes, max_pixels: int, size: int, in_channels: int,
                  max_decode: int) -> int:
    """Every check the header allows, nothing decoded: the bytes decoding will hold (:func:`_check_memory`).

    A JPEG is drafted first, to the smallest DCT scale that keeps ``KEEP`` x ``size`` px
    (:func:`trainer.preprocess.draft_for`), so the memory check applies to what is really decoded.
    """
    w, h = img.size
    if w < 1 or h < 1 or w * h > max_pixels:
        raise UploadError(f"image rejected: {w}x{h} = {w * h / 1e6:.0f} megapixels is over the "
                          f"{max_pixels / 1e6:.0f} megapixel limit", 400)
    _check_jpeg_length(img, data)
    draft_for(img, size, in_channels)
    return _check_memory(img, max_decode)


def _fmt(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return "image"


def decode_image(data: bytes, meta: dict, *, max_bytes: int | None = None,
                 max_pixels: int = MAX_PIXELS, max_decode: int | None = None) -> np.ndarray:
    """Bytes -> uint8 numpy ``(in_channels, input_size, input_size)`` preprocessed like the run's images.

    The header is checked first; decoding and preprocessing then hold what they need of the process's
    :class:`DecodeMemory` (not granted within ``DECODE_WAIT_S`` -> :class:`UploadError` 503).
    """
    check_size(len(data), max_bytes or max_upload_bytes())
    size, channels = int(meta["input_size"]), int(meta["in_channels"])
    # catch_warnings is process-wide, not per thread; the explicit pixel check
    # is the real guard, this only turns Pillow's own warning into an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = _open(data)
        try:
            need = _check_header(img, data, max_pixels, size, channels, max_decode or max_decode_bytes())
            with _DECODE_MEMORY.hold(need, DECODE_WAIT_S):
                _load(img)
                try:
                    return pil_to_array(img, size, channels)
                except (OSError, ValueError) as e:  # exotic modes Pillow cannot convert
                    raise UploadError(f"cannot convert this {img.format} image ({img.mode}): {e}", 400) from None
        finally:
            img.close()


def parse_data_url(contents: str | None, max_bytes: int | None = None) -> bytes:
    """dcc.Upload ``contents`` (``data:<mime>;base64,<data>``) -> bytes, size-checked before decoding."""
    max_bytes = max_bytes or max_upload_bytes()
    if not contents:
        raise UploadError("the file is empty", 400)
    header, sep, payload = contents.partition(",")
    if not sep or ";base64" not in header:
        # dcc.Upload sends "data:" alone (or a bare prefix) for a 0-byte file
        if not payload:
            raise UploadError("the file is empty", 400)
        raise UploadError("upload was not base64-encoded", 400)
    check_size((len(payload) * 3) // 4 - payload.count("=", -2), max_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError("upload data is not valid base64", 400) from None
