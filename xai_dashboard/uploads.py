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
* corrupt or truncated data -> 400 (Pillow raises while decoding).

The decoded image then goes through :func:`trainer.preprocess.pil_to_array`
with the run's ``input_size``/``in_channels``: EXIF rotation, RGBA over white,
palette, 16-bit and greyscale handling, shorter-side resize and centre crop,
exactly as the run's own images were prepared.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainer.preprocess import pil_to_array

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_BYTES_ENV = "XAI_MAX_UPLOAD_MB"
DEFAULT_MAX_MB = 10
MAX_PIXELS = 50_000_000  # ~8K x 6K; far below what a 10 MB file could declare in a bomb
ACCEPT = "image/png,image/jpeg,image/webp,.png,.jpg,.jpeg,.webp"

# Magic numbers of formats people commonly try, only to word the 415 message.
_SNIFF = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"%PDF", "PDF"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"),
          (b"<svg", "SVG"), (b"<?xml", "XML/SVG"), (b"\0\0\1\0", "ICO"))


class UploadError(ValueError):
    """An upload that cannot be used; ``status`` is 400, 413 or 415."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def max_upload_bytes() -> int:
    """The upload limit in bytes: ``$XAI_MAX_UPLOAD_MB`` (default 10 MB)."""
    try:
        mb = float(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_MB))
    except ValueError:
        mb = DEFAULT_MAX_MB
    return int(mb * 2**20) if mb > 0 else DEFAULT_MAX_MB * 2**20


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


def open_image(data: bytes, *, max_bytes: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes -> a fully decoded PIL image (first frame), or :class:`UploadError`."""
    check_size(len(data), max_bytes or max_upload_bytes())
    # catch_warnings is process-wide, not per thread; the explicit pixel check
    # below is the real guard, this only turns Pillow's own warning into an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        except UnidentifiedImageError:
            raise _unsupported(data) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError("image rejected: it declares too many pixels (decompression bomb?)", 400) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise UploadError(f"corrupt {_fmt(data)} header: {e}", 400) from None
        w, h = img.size
        if w < 1 or h < 1 or w * h > max_pixels:
            img.close()
            raise UploadError(f"image rejected: {w}x{h} = {w * h / 1e6:.0f} megapixels is over the "
                              f"{max_pixels / 1e6:.0f} megapixel limit", 400)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError("image rejected: it declares too many pixels (decompression bomb?)", 400) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            raise UploadError(f"corrupt or truncated {img.format} image: {e}", 400) from None
    return img


def _fmt(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return "image"


def decode_image(data: bytes, meta: dict, *, max_bytes: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes -> uint8 numpy ``(in_channels, input_size, input_size)`` preprocessed like the run's images."""
    img = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return pil_to_array(img, int(meta["input_size"]), int(meta["in_channels"]))
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
