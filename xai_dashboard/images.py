"""Test images as small PNGs/JPEGs: upscaling, encoding, caching, and the ``/img`` route.

Galleries reference images by URL (``/img/<run>/<index>.png?size=96&v=<fp>``)
instead of shipping base64 in callback payloads: the browser fetches them in
parallel and caches them, and the gallery callback stays a few kilobytes.
Bytes are memoised per process by ``(dataset fingerprint, index, size, format)`` in
a cache bounded in bytes (``$XAI_THUMB_CACHE_MB``, 64 MB); the same key is the
HTTP ETag, so a revalidation costs no encoding at all.

The URL's extension is the format served: ``.png`` always PNG, ``.jpg`` JPEG. CIFAR-10 and
digits images are the network's own pixels, upscaled, as PNG only. An image folder's come
from the user's original file, shrunk to fit ``size`` with its aspect ratio (JPEG ``draft``,
then ``thumbnail``), so the user sees the real photo; ``.jpg`` (:func:`thumbnail_format`) is
the compact choice for them (about 8x smaller than PNG). Those are also kept on disk, shared
by every worker and restart, in a diskcache bounded in bytes (``$XAI_THUMB_DISK_MB``, 512 MB)
beside the explanation cache (:mod:`.cache`: private folder, raw bytes only, never pickle).
"""
from __future__ import annotations

import functools
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import diskcache
import numpy as np
from PIL import Image

from trainer.preprocess import DEEP_GREY
from trainer.sources import DatasetUnavailable

from .cache import SafeDisk, _private_database, cache_dir

MIN_SIZE, MAX_SIZE, THUMB_SIZE, DETAIL_SIZE = 8, 512, 96, 256
CACHE_SECONDS = 7 * 24 * 3600
THUMB_CACHE_ENV, DEFAULT_THUMB_CACHE_MB = "XAI_THUMB_CACHE_MB", 64
THUMB_DISK_ENV, DEFAULT_THUMB_DISK_MB = "XAI_THUMB_DISK_MB", 512
JPEG_QUALITY = 85
FORMATS = {"png": "image/png", "jpg": "image/jpeg"}  # a URL's extension -> what it serves
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


def _megabytes(env: str, default: float) -> int:
    """``$env`` megabytes as bytes (``default`` when unset or not a number)."""
    try:
        mb = float(os.environ.get(env, default))
    except ValueError:
        mb = default
    return int(max(mb, 0) * 2**20)


THUMBNAILS = ByteLRU(_megabytes(THUMB_CACHE_ENV, DEFAULT_THUMB_CACHE_MB))


@functools.lru_cache(maxsize=4)
def _open_disk(path: str, size_limit: int) -> diskcache.Cache:
    cache = diskcache.Cache(path, size_limit=size_limit, disk=SafeDisk)
    _private_database(Path(path))
    return cache


def thumbnail_disk() -> diskcache.Cache:
    """The on-disk thumbnail cache: ``thumbnails/`` in :func:`.cache.cache_dir`, 0700, one handle per process."""
    return _open_disk(str(cache_dir(cache_dir() / "thumbnails")), _megabytes(THUMB_DISK_ENV, DEFAULT_THUMB_DISK_MB))


def _displayable(img: Image.Image, size: int) -> Image.Image:
    """Any decoded image -> RGB, L, RGBA or LA (what JPEG/PNG take and browsers show)."""
    if img.mode in ("RGB", "L", "RGBA", "LA"):
        return img
    if img.mode in DEEP_GREY:  # 16/32-bit greyscale: shrunk first, then the brightest pixel made white
        img = img.convert("I")
        factor = max(1, min(img.size) // size)
        arr = np.asarray(img.reduce(factor) if factor > 1 else img, dtype=np.float32)
        return Image.fromarray((arr * (255.0 / max(float(arr.max()), 255.0))).astype(np.uint8))
    return img.convert("RGBA" if img.mode in ("PA", "RGBa") or "transparency" in img.info else "RGB")


def original_thumbnail(source, index: int, size: int, fmt: str = "jpg") -> bytes:
    """Test image ``index`` of an image folder's ``source`` (:class:`.image_source.FolderTestImages`), from
    the original file, shrunk to fit ``size`` x ``size`` keeping its aspect ratio (never enlarged), as
    ``fmt`` (a key of :data:`FORMATS`); JPEG has no alpha, so a transparent image is laid on white."""
    img = _displayable(source.original(index, fit=size), size)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    if fmt == "png":
        return encode_png(img)
    if "A" in img.getbands():
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA")).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def has_originals(images) -> bool:
    """Whether ``images`` (a LoadedRun's, or an :class:`ImageSet`'s) are an image folder's files."""
    return hasattr(images, "original")


def thumbnail_format(run) -> str:
    """The compact format (a key of :data:`FORMATS`) of LoadedRun ``run``'s thumbnails, test and training:
    "jpg" for an image folder's photos, "png" for the network's pixels (the only one served for those)."""
    return "jpg" if has_originals(run.images) else "png"


def thumbnail_bytes(images: ImageSet, index: int, size: int, fmt: str = "png") -> bytes:
    """Test image ``index`` at ``size`` px as ``fmt`` (a key of :data:`FORMATS`), memoised in
    :data:`THUMBNAILS`: the network's pixels upscaled to a PNG (~2-10 KB at 96 px), or for an image
    folder the original file's thumbnail (:func:`original_thumbnail`), also kept in :func:`thumbnail_disk`."""
    key = (images.key, index, size, fmt)
    data = THUMBNAILS.get(key)
    if data is not None:
        return data
    if has_originals(images.images):
        disk, disk_key = thumbnail_disk(), f"thumb/{images.key}/{index}/{size}.{fmt}"
        data = disk.get(disk_key)
        if not isinstance(data, bytes):  # a miss (or a foreign row: rewritten below)
            data = original_thumbnail(images.images, index, size, fmt)
            disk.set(disk_key, data)
    else:
        data = encode_png(upscale(to_hwc(images.images[index]), size))
    THUMBNAILS.put(key, data)
    return data


def etag(images: ImageSet, index: int, size: int, fmt: str) -> str:
    return f"{images.key}-{index}-{size}-{fmt}"


def image_url(prefix: str, run: str, index: int, size: int, version: str, split: str = "test",
              fmt: str = "png") -> str:
    """URL of one test image (``split="train"``: training image) as ``fmt`` (:func:`thumbnail_format`
    gives the compact one); ``version`` (the fingerprint of the images) makes it safe to cache forever."""
    where = "" if split == "test" else "train/"
    return (f"{prefix.rstrip('/')}/img/{quote(run, safe='')}/{where}{int(index)}.{fmt}"
            f"?size={int(size)}&v={version}")


def test_image_url(prefix: str, run, index: int, size: int) -> str:
    """:func:`image_url` of LoadedRun ``run``'s test image ``index`` in its compact format (:func:`thumbnail_format`):
    what every gallery, detail and map shows."""
    return image_url(prefix, run.name, index, size, run.meta["dataset"]["fingerprint"], fmt=thumbnail_format(run))


def _training_set(run, data_dir) -> ImageSet:
    from .embedding_space import training_images  # loaded with the first training image asked for

    return training_images(run, data_dir)


def register_image_route(server, store, prefix: str = "/") -> None:
    """``GET {prefix}img/<run>/<index>.png?size=N`` on a Flask ``server``, reading ``store``, and
    ``{prefix}img/<run>/train/<index>.png`` for the training images the run's embeddings index
    (:func:`.embedding_space.training_images`); ``.jpg`` in place of ``.png`` for an image folder's.

    404 for an unknown run, an index outside the split, training images that are not available,
    ``.jpg`` of the network's pixels or any other ``/img/...`` URL (which would otherwise fall through
    to Dash's catch-all page route); 304 when the browser's ``If-None-Match`` already names the image.
    """
    from flask import abort, request

    def serve(run: str, index: int, split: str = "test", fmt: str = "png"):
        try:
            loaded = store.get(run)
        except KeyError:
            abort(404, description=f"unknown run {shown(run)!r}")
        try:
            images = image_set_of(loaded) if split == "test" else _training_set(loaded, store.data_dir)
        except DatasetUnavailable as e:  # no current embeddings.npz, or not the training images it indexes
            abort(404, description=str(e))
        if not 0 <= index < len(images):
            abort(404, description=f"index {index} outside the {split} set (0..{len(images) - 1})")
        if fmt != "png" and not has_originals(images.images):
            abort(404, description=f"run {shown(run)!r} serves its images as PNG only: /img/<run>/<index>.png")
        size = clamp_size(request.args.get("size"))
        tag = etag(images, index, size, fmt)
        if request.if_none_match.contains(tag):
            resp = server.response_class(status=304)
        else:
            try:
                data = thumbnail_bytes(images, index, size, fmt)
            except DatasetUnavailable as e:  # the file changed or went away since start-up
                abort(404, description=str(e))
            resp = server.response_class(data, mimetype=FORMATS[fmt])
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
    for fmt in FORMATS:
        server.add_url_rule(f"{root}/<run>/<int:index>.{fmt}", f"xai_test_image_{fmt}", serve, defaults={"fmt": fmt})
        server.add_url_rule(f"{root}/<run>/train/<int:index>.{fmt}", f"xai_train_image_{fmt}", serve,
                            defaults={"split": "train", "fmt": fmt})
    server.add_url_rule(f"{root}/<path:rest>", "xai_not_an_image", not_an_image)
    server.add_url_rule(f"{root}/", "xai_not_an_image", not_an_image, defaults={"rest": ""})
