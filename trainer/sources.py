"""Where images come from: dataset files -> numpy arrays, fingerprints, the test split of a run.

Everything here returns uint8 numpy arrays ``(N, C, H, W)`` and int64 labels
``(N,)`` and imports no torch at module level: the dashboard opens runs with
it and starts serving before torch is loaded. The trainer wraps the same
arrays as tensors without a copy (:mod:`trainer.data`).

Specs understood by :func:`read_dataset`:

* ``cifar10``: ``cifar10_{train,test}.npz`` from ``data_dir`` / ``$XAI_DATA_DIR``,
  else torchvision's CIFAR10 in ``~/.cache/xai-dashboard/cifar10`` (downloaded once).
* ``imagefolder:PATH``: ``PATH/train`` and ``PATH/test`` (or ``PATH/val``) in
  torchvision's ImageFolder layout, any image size, resized and centre-cropped.
  Read lazily (:mod:`trainer.folders`); here only its test split is decoded, and
  its fingerprint is that of the test file list (paths, sizes, labels).
  :func:`folder_test_files` rebuilds that list from the run's record without
  listing or decoding anything (the dashboard decodes each image when shown).
* ``digits``: scikit-learn's bundled 8x8 digits, upscaled; works offline.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_ENV = "XAI_DATA_DIR"
IMAGE_ROOT_ENV = "XAI_IMAGE_ROOT"  # where moved image folders are now (:func:`locate_folder`)
CACHE_DIR = Path(os.environ.get("XAI_CACHE_DIR", Path.home() / ".cache" / "xai-dashboard"))


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be found locally nor downloaded; the message says how to fix it."""


@dataclass(frozen=True)
class ImageArrays:
    """A dataset as numpy: images uint8 ``(N, C, H, W)`` (possibly a strided view), labels int64 ``(N,)``."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]


def fingerprint(x, y, samples: int = 256) -> str:
    """Hash of all labels, the shape, and an evenly spaced sample of images.

    ``x`` uint8 ``(N, C, H, W)`` and ``y`` ``(N,)``, numpy arrays or CPU tensors.
    Cheap (no full pass over the pixels) yet any reordering, relabelling or a
    different dataset of the same size changes it.
    """
    x, y = np.asarray(x), np.asarray(y)
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(y.astype(np.int64).tobytes())
    idx = np.linspace(0, len(x) - 1, num=min(samples, len(x))).astype(np.int64)
    h.update(np.ascontiguousarray(x[idx]).tobytes())
    return h.hexdigest()[:16]


def data_dir_from(arg: str | os.PathLike | None) -> Path | None:
    value = arg or os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


DEFAULT_INPUT_SIZE = 32  # digits and image folders without --input-size are resized to this; CIFAR-10 is 32 px


def image_side(input_size: int | None) -> int:
    """The image side to read at: ``input_size``, or :data:`DEFAULT_INPUT_SIZE` when none was given (0 is not
    "none": the config refuses it)."""
    return DEFAULT_INPUT_SIZE if input_size is None else input_size


def read_dataset(spec: str, data_dir: str | os.PathLike | None = None, input_size: int | None = None,
                 train: bool = True) -> ImageArrays:
    """``train=False`` skips the training images where the source allows (the dashboard needs only the test split)."""
    if spec == "cifar10":
        return _cifar10(data_dir_from(data_dir), train)
    if spec == "digits":
        return _digits(image_side(input_size))
    if spec.startswith("imagefolder:"):
        if train:
            raise ValueError("an image folder's training images are read lazily: use trainer.data.load_dataset")
        x, y, files, classes = _image_folder_test(folder_root(spec), image_side(input_size))
        return ImageArrays(f"imagefolder:{files.root.name}", x[:0], y[:0], x, y, classes)
    raise ValueError(f"unknown dataset {spec!r}; use cifar10, digits or imagefolder:PATH")


def _nchw(x: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` -> ``(N, C, H, W)`` as a view, not a copy: the dashboard starts ~0.1 s
    sooner, and a thumbnail's ``(H, W, C)`` pixels stay contiguous in memory."""
    return x.transpose(0, 3, 1, 2)


def _cifar10(data_dir: Path | None, with_train: bool = True) -> ImageArrays:
    if data_dir is not None:
        train, test = data_dir / "cifar10_train.npz", data_dir / "cifar10_test.npz"
        if train.is_file() and test.is_file():
            with np.load(test) as te:
                test_x, test_y = _nchw(te["x"]), te["y"].astype(np.int64)
                classes = tuple(str(c) for c in te["classes"])
            train_x, train_y = test_x[:0], test_y[:0]
            if with_train:
                with np.load(train) as tr:
                    train_x, train_y = _nchw(tr["x"]), tr["y"].astype(np.int64)
            return ImageArrays("cifar10", train_x, train_y, test_x, test_y, classes)
    return _cifar10_torchvision(data_dir)


def _cifar10_torchvision(data_dir: Path | None) -> ImageArrays:
    from torchvision.datasets import CIFAR10

    root = CACHE_DIR / "cifar10"
    try:
        tr = CIFAR10(root, train=True, download=True)
        te = CIFAR10(root, train=False, download=True)
    except Exception as e:  # URLError, OSError, RuntimeError: all mean "not here and not reachable"
        where = f"{data_dir} has no cifar10_train.npz/cifar10_test.npz" if data_dir else f"${DATA_ENV} is not set"
        raise DatasetUnavailable(
            f"CIFAR-10 is not available: {where}, and downloading it into {root} failed "
            f"({type(e).__name__}: {e}). Fix: point --data-dir or {DATA_ENV} at a folder with "
            f"cifar10_train.npz and cifar10_test.npz, or connect to the internet once so torchvision "
            f"can download it."
        ) from None
    return ImageArrays("cifar10", _nchw(tr.data), np.asarray(tr.targets, dtype=np.int64), _nchw(te.data),
                       np.asarray(te.targets, dtype=np.int64), tuple(tr.classes))


# The stratified 80/20 split of scikit-learn's 1,797 digits that
# ``train_test_split(range(1797), test_size=0.2, random_state=0, stratify=target)`` gives,
# as a packed test mask: opening a digits run then needs neither scikit-learn (~1.4 s to
# import) nor torch. tests/test_data.py recomputes it with scikit-learn.
_DIGITS_TEST_MASK = (
    "AAAEiDUkEEAABkEAk0IFABoACAEAJAAoBiwSABAAlAoAkBkSBCD4oAKBEKAACAqIIEQVJElCQKAKAAAAQATYAACBgCAASAXEABBACKAQ"
    "AAVASAAwEAACDsQJAAIkhACDqAE8IKaYCgAAAAsIQAgEoBhIAgJAQcEAgARARoQ3aoECFgBEgABAQqCkGApQAIQLhWHGCBCACABMgMAgB"
    "AaOAAEIggCBADgIA8AIGQAAEA4BAIQQoCEAMygpBMBEwIBoDgECgwCCAIgipkAsJAQhCKhggJCBoAwCggJCEgE4pBUA"
)


def _digits_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("the digits dataset ships with scikit-learn, which is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def bilinear_resize(x: np.ndarray, size: int) -> np.ndarray:
    """float32 ``(N, C, H, W)`` -> ``(N, C, size, size)``, bilinear with half-pixel centres.

    The definition torch's ``F.interpolate(mode="bilinear", align_corners=False)`` uses (source
    coordinate ``max(0, (d + 0.5) * in / out - 0.5)``, edge clamped), in float32. For the digits'
    8 px to a power-of-two size (the demo's 32 px) every step is exact, so the pixels and the
    fingerprint equal torch's; at other sizes torch's vectorised rounding differs by one grey
    level on ~0.1% of pixels (tests/test_data.py measures both).
    """
    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in / size)
        src = np.maximum((np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
        lo = np.minimum(src.astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, wy = axis(x.shape[2])
    x0, x1, wx = axis(x.shape[3])
    wy, wx = wy[:, None], wx[None, :]
    rows0, rows1 = x[:, :, y0], x[:, :, y1]
    top = (np.float32(1) - wx) * rows0[..., x0] + wx * rows0[..., x1]
    bottom = (np.float32(1) - wx) * rows1[..., x0] + wx * rows1[..., x1]
    return ((np.float32(1) - wy) * top + wy * bottom).astype(np.float32)


def _digits(size: int) -> ImageArrays:
    import base64

    data = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float64)
    images, y = data[:, :-1].reshape(-1, 1, 8, 8), data[:, -1].astype(np.int64)
    x = (images * (255.0 / 16.0)).round().astype(np.uint8).astype(np.float32)  # (N, 1, 8, 8)
    x = np.clip(np.round(bilinear_resize(x, size)), 0, 255).astype(np.uint8)
    test = np.unpackbits(np.frombuffer(base64.b64decode(_DIGITS_TEST_MASK), dtype=np.uint8))[:len(y)].astype(bool)
    return ImageArrays("digits", x[~test], y[~test], x[test], y[test], tuple(str(i) for i in range(10)))


def folder_root(spec: str) -> Path:
    """``imagefolder:PATH`` -> PATH."""
    return Path(spec.split(":", 1)[1]).expanduser()


def image_roots() -> list[Path]:
    """Where moved image folders are now: ``$XAI_IMAGE_ROOT``, folders separated by ``os.pathsep``
    (``xai-dashboard --image-root DIR`` sets it)."""
    return [Path(p).expanduser() for p in os.environ.get(IMAGE_ROOT_ENV, "").split(os.pathsep) if p]


def locate_folder(spec: str, data_dir: str | os.PathLike | None = None, probe: str | None = None) -> Path:
    """Where the folder of ``imagefolder:PATH`` is now: PATH, else (it moved) ``BASE/<its name>`` or
    ``BASE`` itself for each BASE of :func:`image_roots`, then ``data_dir`` (or ``$XAI_DATA_DIR``).
    A candidate counts when it is a folder and, given a ``probe`` path relative to it (a test file),
    holds that file."""
    root, moved = folder_root(spec), data_dir_from(data_dir)
    bases = image_roots() + ([moved] if moved is not None else [])
    candidates = [root] + [folder for base in bases for folder in (base / root.name, base)]
    for folder in candidates:
        if folder.is_dir() and (probe is None or (folder / probe).is_file()):
            return folder
    tried = f" (nor {' or '.join(map(str, candidates[1:]))})" if bases else ""
    raise DatasetUnavailable(
        f"folder not found: {root}{tried}. Fix: if the images moved, start with --image-root DIR (or set "
        f"{IMAGE_ROOT_ENV}) naming the folder or the folder that holds it")


def folder_test_files(dataset_meta: dict, records: list[dict], data_dir: str | os.PathLike | None = None,
                      checked: int = 64):
    """The :class:`trainer.folders.FileList` of a run's recorded test split (``[{path, label, size}]``,
    :func:`trainer.rundir.load_test_files`), without listing or decoding the folder.

    The list must hash to the run's fingerprint, and ``checked`` files spread over it must exist
    with their recorded sizes: cheap (a few stats, not 100,000) and it catches a moved, replaced
    or re-encoded folder; a file changed later fails when it is shown.
    """
    from trainer.folders import FileList

    spec = dataset_meta.get("spec", dataset_meta["name"])
    try:
        paths = tuple(str(r["path"]) for r in records)
        labels = np.asarray([r["label"] for r in records], dtype=np.int64)
        sizes = np.asarray([r["size"] for r in records], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetUnavailable(f"the recorded test file list is malformed ({type(e).__name__}: {e})") from None
    root = locate_folder(spec, data_dir, paths[0] if paths else None)
    files = FileList(root, paths, labels, sizes)
    check_fingerprint(dataset_meta, files.fingerprint())
    for i in np.unique(np.linspace(0, len(files) - 1, min(checked, len(files))).astype(np.int64)):
        try:
            found = (root / paths[i]).stat().st_size
        except OSError:
            raise DatasetUnavailable(f"{root / paths[i]}: missing, though the run was evaluated on it") from None
        if found != sizes[i]:
            raise DatasetUnavailable(f"{root / paths[i]}: {found:,} bytes, the run was evaluated on a file of "
                                     f"{sizes[i]:,}: different data — refusing to pair them")
    return files


def check_fingerprint(dataset_meta: dict, found: str) -> None:
    if found != dataset_meta["fingerprint"]:
        raise DatasetUnavailable(
            f"the {dataset_meta['name']} test set found has fingerprint {found}, but the run was evaluated "
            f"on {dataset_meta['fingerprint']}: different data (or a different order) — refusing to pair them"
        )


def _image_folder_test(root: Path, size: int, n: int | None = None):
    """(uint8 ``(N, C, size, size)``, labels ``(N,)``, decoded FileList, classes) of ``n`` test files
    spread over the classes (:meth:`trainer.folders.FileList.spread`), as the trainer picked them."""
    from trainer.folders import decode_files, open_folder

    classes, _, test = open_folder(root, train=False)
    x, files = decode_files(test.spread(n), size)
    return x, files.labels, files, classes


def load_test_split(dataset_meta: dict, data_dir: str | os.PathLike | None = None,
                    input_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test images uint8 ``(N, C, H, W)`` and labels int64 ``(N,)`` a run was evaluated on.

    Reloads the dataset named in ``meta.json`` and checks its fingerprint, so
    predictions are never paired with the wrong images.
    """
    spec, n = dataset_meta.get("spec", dataset_meta["name"]), dataset_meta.get("test_subset")
    if spec.startswith("imagefolder:"):  # only the test files are listed and decoded
        x, y, files, _ = _image_folder_test(locate_folder(spec, data_dir), image_side(input_size), n)
        found = files.fingerprint()
    else:
        ds = read_dataset(spec, data_dir, input_size, train=False)
        x, y = ds.test_x[:n or len(ds.test_y)], ds.test_y[:n or len(ds.test_y)]
        found = fingerprint(x, y)
    check_fingerprint(dataset_meta, found)
    return x, y
