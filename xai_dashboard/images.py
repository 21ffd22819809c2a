"""Test images as small PNGs: upscaling, encoding, caching, and the ``/img`` route.

Galleries reference images by URL (``/img/<run>/<index>.png?size=96&v=<fp>``)
instead of shipping base64 in callback payloads: the browser fetches them in
parallel and caches them, and the gallery callback stays a few kilobytes.
PNG bytes are memoised per process by ``(dataset fingerprint, index, size)`` in
a cache bounded in bytes (``$XAI_THUMB_CACHE_MB``, 64 MB); the same key is the
HTTP ETag, so a revalidation costs no encoding at all.
"""
from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np
from PIL import Image

MIN_SIZE, MAX_SIZE, THUMB_SIZE, DETAIL_SIZE = 8, 512, 96, 256
CACHE_SECONDS = 7 * 24 * 3600
THUMB_CACHE_ENV, DEFAULT_THUMB_CACHE_MB = "XAI_THUMB_CACHE_MB", 64
ECHO_LIMIT = 80  # characters of a user-supplied value an error message may repeat


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` as an error message may quote it: at most ``limit`` characters, then the full length."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A test set's pixels, uint8 ``(N, C, H, W)``; equality and hash use ``key`` (its fingerprint) only."""

    key: str
    images: object = field(repr=False)  # torch.Tensor or np.ndarray

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageSet) and other.key == self.key

    def __len__(self) -> int:
        return len(self.images)


def image_set_of(run) -> ImageSet:
    """Wrap a :class:`~xai_dashboard.store.LoadedRun`'s test images (no copy)."""
    return ImageSet(run.meta["dataset"]["fingerprint"], run.images)


def to_hwc(img) -> np.ndarray:
    """uint8 ``(C, H, W)`` (tensor or array) -> ``(H, W, 3)`` or ``(H, W)`` for one channel."""
    arr = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"expected (C, H, W) with C in (1, 3), got {arr.shape}")
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def upscale(hwc: np.ndarray, size: int) -> Image.Image:
    """Square ``size`` x ``size`` image; nearest neighbour for whole-number factors
    (crisp pixels, no invented detail), bilinear otherwise."""
    img = Image.fromarray(hwc)
    if img.size == (size, size):
        return img
    whole = size % img.size[0] == 0 and size % img.size[1] == 0 and size >= max(img.size)
    return img.resize((size, size), Image.Resampling.NEAREST if whole else Image.Resampling.BILINEAR)


def encode_png(img: Image.Image | np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes; level 1 because these files are tiny and encoding time is what matters."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def clamp_size(size: int | str | None, default: int = THUMB_SIZE) -> int:
    try:
        value = int(size) if size is not None else default
    except (TypeError, ValueError):
        value = default
    return min(max(value, MIN_SIZE), MAX_SIZE)


class ByteLRU:
    """A thread-safe least-recently-used map of bytes, bounded by their total length.

    An entry count bounds nothing: a 96 px thumbnail is ~5 KB but a 500 px one ~150 KB, so
    8,192 entries could hold 1.2 GB per worker. Values larger than the whole budget are not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes += len(value) - (len(old) if old is not None else 0)
            self._items[key] = value
            while self.nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= len(dropped)


def _thumb_cache_bytes() -> int:
    try:
        mb = float(os.environ.get(THUMB_CACHE_ENV, DEFAULT_THUMB_CACHE_MB))
    except ValueError:
        mb = DEFAULT_THUMB_CACHE_MB
    return int(max(mb, 0) * 2**20)


THUMBNAILS = ByteLRU(_thumb_cache_bytes())


def thumbnail_png(images: ImageSet, index: int, size: int) -> bytes:
    """PNG of test image ``index`` scaled to ``size`` px (~2-10 KB at 96 px), memoised in :data:`THUMBNAILS`."""
    key = (images.key, index, size)
    png = THUMBNAILS.get(key)
    if png is None:
        png = encode_png(upscale(to_hwc(images.images[index]), size))
        THUMBNAILS.put(key, png)
    return png


def etag(images: ImageSet, index: int, size: int) -> str:
    return f"{images.key}-{index}-{size}"


def image_url(prefix: str, run: str, index: int, size: int, version: str) -> str:
    """URL of one test image; ``version`` (the dataset fingerprint) makes it safe to cache forever."""
    return f"{prefix.rstrip('/')}/img/{quote(run, safe='')}/{int(index)}.png?size={int(size)}&v={version}"


def register_image_route(server, store, prefix: str = "/") -> None:
    """``GET {prefix}img/<run>/<index>.png?size=N`` on a Flask ``server``, reading ``store``.

    404 for an unknown run, an index outside the test set or any other ``/img/...`` URL (which
    would otherwise fall through to Dash's catch-all page route); 304 when the browser's
    ``If-None-Match`` already names the image.
    """
    from flask import abort, request

    def serve(run: str, index: int):
        try:
            loaded = store.get(run)
        except KeyError:
            abort(404, description=f"unknown run {shown(run)!r}")
        images = image_set_of(loaded)
        if not 0 <= index < len(images):
            abort(404, description=f"index {index} outside the test set (0..{len(images) - 1})")
        size = clamp_size(request.args.get("size"))
        tag = etag(images, index, size)
        if request.if_none_match.contains(tag):
            resp = server.response_class(status=304)
        else:
            resp = server.response_class(thumbnail_png(images, index, size), mimetype="image/png")
        resp.set_etag(tag)
        # Only a URL that names the dataset version may be cached without asking again;
        # a bare /img/<run>/<i>.png could point at another dataset after a restart.
        versioned = request.args.get("v") == images.key
        resp.headers["Cache-Control"] = (
            f"public, max-age={CACHE_SECONDS}, immutable" if versioned else "public, no-cache"
        )
        return resp

    def not_an_image(rest: str):
        abort(404, description=f"no test image at /img/{shown(rest)}; URLs look like /img/<run>/<index>.png")

    root = f"{prefix.rstrip('/')}/img"
    server.add_url_rule(f"{root}/<run>/<int:index>.png", "xai_test_image", serve)
    server.add_url_rule(f"{root}/<path:rest>", "xai_not_an_image", not_an_image)
    server.add_url_rule(f"{root}/", "xai_not_an_image", not_an_image, defaults={"rest": ""})
