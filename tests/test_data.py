"""Dataset sources on real data: the shared CIFAR-10 copy, digits, and an ImageFolder made here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.augment import AugmentConfig, augment_batch, flip_mask
from trainer.data import channel_stats, load_dataset, train_val_split
from trainer.sources import DatasetUnavailable, fingerprint, load_test_split


def test_cifar10_shared_copy(cifar_dir):
    ds = load_dataset("cifar10", cifar_dir)
    assert ds.train_x.shape == (50_000, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert ds.classes[3] == "cat" and ds.classes[5] == "dog" and len(ds.classes) == 10
    mean, std = channel_stats(ds.train_x)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-4)
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=1e-4)


def test_cifar10_env_var_and_test_only(cifar_dir, monkeypatch):
    monkeypatch.setenv("XAI_DATA_DIR", str(cifar_dir))
    ds = load_dataset("cifar10", train=False)
    assert len(ds.train_y) == 0 and len(ds.test_y) == 10_000
    assert ds.fingerprint == load_dataset("cifar10").fingerprint


def test_cifar10_offline_without_copy_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("trainer.sources.CACHE_DIR", tmp_path / "cache")
    import torchvision.datasets.utils as tv_utils

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert "XAI_DATA_DIR" in msg and "--data-dir" in msg and "internet" in msg


def test_digits_offline_demo():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == (1, 32, 32)
    assert len(ds.train_y) + len(ds.test_y) == 1797 and len(ds.test_y) == 360
    assert set(ds.test_y.tolist()) == set(range(10))
    assert ds.fingerprint == load_dataset("digits").fingerprint  # fixed split


def _write_folder(root, sizes, modes):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for cls in ("cats", "dogs"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
                img.convert(modes[i % len(modes)]).save(d / f"{i}.png")


def test_image_folder_any_size_is_lazy(tmp_path):
    from trainer.batches import make_splits
    from trainer.data import FolderDataset

    _write_folder(tmp_path, [(50, 40), (17, 64), (128, 128)], ["RGB", "L", "RGBA", "P"])
    ds = load_dataset(f"imagefolder:{tmp_path}", input_size=24, workers=0)
    assert isinstance(ds, FolderDataset) and not hasattr(ds, "train_x")  # nothing decoded as one array
    assert ds.classes == ("cats", "dogs") and ds.train_y.tolist() == [0] * 6 + [1] * 6
    assert ds.test_x.shape == (6, 3, 24, 24) and ds.test_x.dtype == torch.uint8
    cpu, layout = torch.device("cpu"), torch.contiguous_format
    train, _, mean, std = make_splits(ds, torch.arange(12), torch.arange(0), cpu, layout)
    x, y, idx = next(train.batches([torch.tensor([11, 0, 5])]))
    assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32
    assert y.tolist() == [1, 0, 0] and idx.tolist() == [11, 0, 5]
    # The decoded batch is the shared preprocessing of exactly those files, normalised.
    from trainer.preprocess import normalize, pil_to_array

    want = pil_to_array(Image.open(tmp_path / "train" / "dogs" / "5.png"), 24)
    torch.testing.assert_close(x[0], normalize(torch.from_numpy(want)[None], mean, std)[0])


def test_image_folder_needs_splits(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable, match="test/"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_fingerprint_detects_changes():
    x = torch.randint(0, 255, (100, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 10, (100,))
    fp = fingerprint(x, y)
    y2 = y.clone()
    y2[5] = (y2[5] + 1) % 10
    assert fingerprint(x, y2) != fp
    assert fingerprint(x.flip(0), y.flip(0)) != fp


def test_load_test_split_refuses_other_data():
    ds = load_dataset("digits")
    meta = {**ds.describe(), "spec": "digits", "fingerprint": "0" * 16}
    with pytest.raises(DatasetUnavailable, match="refusing"):
        load_test_split(meta)


def test_validation_split_is_deterministic_and_disjoint():
    tr, va = train_val_split(1000, 0.1, seed=3)
    tr2, va2 = train_val_split(1000, 0.1, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(va) == 100 and len(set(tr.tolist()) | set(va.tolist())) == 1000


def test_batch_augmentation_shapes_and_alternating_flip():
    x = torch.randn(64, 3, 32, 32)
    idx = torch.arange(64)
    cfg = AugmentConfig(translate=2, flip="alternate", cutout=8, jitter=0.2, rotate=10)
    out = augment_batch(x, idx, 0, cfg, torch.Generator().manual_seed(0), seed=0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    m0 = flip_mask(idx, 0, "alternate", None, seed=0)
    m1 = flip_mask(idx, 1, "alternate", None, seed=0)
    assert torch.equal(m0, ~m1) and 10 < m0.sum() < 54
    # Translation only moves pixels: every output row is a shifted window of the reflected input.
    plain = AugmentConfig(translate=2, flip="none")
    t = augment_batch(x, idx, 0, plain, torch.Generator().manual_seed(1), seed=0)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    found = any(torch.equal(t[0], padded[0, :, dy:dy + 32, dx:dx + 32]) for dy in range(5) for dx in range(5))
    assert found


def test_digits_without_sklearn_or_torch_equals_their_reference():
    """The digits source reads scikit-learn's data file with numpy and resizes with numpy; the
    reference is what it replaced: sklearn's load_digits + stratified train_test_split and torch's
    bilinear F.interpolate (exact at the demo's 32 px and at 64 px; within one grey level at 28 px)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from trainer.sources import read_dataset

    d = load_digits()
    tr, te = train_test_split(np.arange(len(d.target)), test_size=0.2, random_state=0, stratify=d.target)
    small = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None].float()
    for size, tolerance in ((32, 0), (64, 0), (28, 1)):
        want = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
        want = want.round().clamp(0, 255).to(torch.uint8).numpy()
        got = read_dataset("digits", input_size=size)
        assert np.array_equal(got.test_y, d.target[np.sort(te)]) and np.array_equal(got.train_y, d.target[np.sort(tr)])
        diff = np.abs(got.test_x.astype(int) - want[np.sort(te)]).max()
        assert diff <= tolerance, (size, diff)
