"""File-backed image folders end to end: awkward files in, a loadable run out.

The folder is built here from the digits dataset (real images, not noise):
mixed sizes and modes (RGB, RGBA, greyscale, 16-bit, palette, EXIF-rotated
JPEG), one corrupt file and one empty class folder.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from trainer.cli import main
from trainer.folders import open_folder
from trainer.rundir import load_run, load_test_files
from trainer.sources import DatasetUnavailable, load_test_split

MODES = ("RGB", "RGBA", "L", "I;16", "P", "JPEG-EXIF")


def _save(img: Image.Image, path, mode: str, side: int) -> None:
    """Save an (8, 8) greyscale digit upscaled to ``side`` px in ``mode``."""
    big = img.resize((side, side + side // 3), Image.Resampling.BILINEAR).convert("RGB")
    if mode == "JPEG-EXIF":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees on display
        big.save(path.with_suffix(".jpg"), quality=90, exif=exif)
    elif mode == "I;16":
        arr = np.asarray(big.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(arr).save(path)  # PIL stores uint16 as a 16-bit greyscale PNG
    else:
        big.convert(mode).save(path)


def make_folder(root, per_class: dict[str, int] | None = None, test_per_class: int = 4):
    """Digits 0, 1, 2 as classes ``zero``, ``one``, ``two``; returns the corrupt file's relative path."""
    from sklearn.datasets import load_digits

    d = load_digits()
    names = ("zero", "one", "two")
    per_class = per_class or dict.fromkeys(names, 12)
    for split, counts in (("train", per_class), ("test", dict.fromkeys(names, test_per_class))):
        for label, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            images = d.images[d.target == label][: counts.get(name, 0)] if split == "train" else \
                d.images[d.target == label][-counts.get(name, 0):]
            for i, im in enumerate(images):
                img = Image.fromarray((im * 255 / 16).astype(np.uint8), mode="L")
                _save(img, folder / f"{i:03d}.png", MODES[i % len(MODES)], 20 + 7 * (i % 5))
    (root / "train" / "empty").mkdir()
    corrupt = root / "train" / "one" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    return "train/one/corrupt.png"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    return root, make_folder(root)


def test_listing_skips_corrupt_and_empty_with_one_warning(folder, capsys):
    root, corrupt = folder
    classes, train, test = open_folder(root, workers=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and corrupt in err[0] and "train/empty" in err[0]
    assert classes == ("one", "two", "zero")
    assert len(train) == 36 and corrupt not in train.paths and len(test) == 12
    assert np.bincount(train.labels).tolist() == [12, 12, 12]


def test_train_one_epoch_on_awkward_folder(folder, tmp_path, capsys):
    root, corrupt = folder
    out = tmp_path / "run"
    rc = main(["--dataset", f"imagefolder:{root}", "--input-size", "32", "--model", "lenet5", "--epochs", "1",
               "--batch-size", "8", "--workers", "2", "--val-fraction", "0.1", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert corrupt in captured.err and captured.err.count("warning:") == 1
    run = load_run(out)
    assert run.meta["class_names"] == ["one", "two", "zero"] and run.meta["input_size"] == 32
    assert run.meta["in_channels"] == 3 and run.meta["dataset"]["num_test"] == 12
    assert len(run.predictions["logits"]) == 12
    # The stored list is the test split, in order, with sizes and labels; the fingerprint hashes it.
    files = load_test_files(out)
    _, _, test = open_folder(root)
    assert [f["path"] for f in files] == list(test.paths)
    assert [f["label"] for f in files] == test.labels.tolist() == run.predictions["label"].tolist()
    assert all(f["size"] == (root / f["path"]).stat().st_size for f in files)
    assert run.meta["dataset"]["fingerprint"] == test.fingerprint()
    x, y = load_test_split(run.meta["dataset"], None, 32)
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.uint8 and y.tolist() == test.labels.tolist()
    assert "recall" in captured.out and "manifest.json" in {p.name for p in out.iterdir()}


def test_fingerprint_changes_when_a_test_file_changes(folder, tmp_path):
    root, _ = folder
    _, _, before = open_folder(root)
    victim = root / before.paths[0]
    original = victim.read_bytes()
    try:
        img = Image.open(io.BytesIO(original))
        img.load()
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim, format=img.format, quality=50)
        assert victim.stat().st_size != len(original)  # the fingerprint sees sizes, not pixels
        _, _, after = open_folder(root)
        assert after.paths == before.paths and after.fingerprint() != before.fingerprint()
        meta = {"name": "imagefolder:x", "spec": f"imagefolder:{root}", "fingerprint": before.fingerprint(),
                "num_test": len(before)}
        with pytest.raises(DatasetUnavailable, match="refusing"):
            load_test_split(meta, None, 32)
    finally:
        victim.write_bytes(original)


def test_load_test_split_never_reads_training_images(folder, monkeypatch):
    import trainer.folders as folders

    root, _ = folder
    _, _, test = open_folder(root)
    opened = []
    real = folders.decode
    monkeypatch.setattr(folders, "decode", lambda r, p, *a: opened.append(p) or real(r, p, *a))
    meta = {"name": "imagefolder:x", "spec": f"imagefolder:{root}", "fingerprint": test.fingerprint()}
    load_test_split(meta, None, 16)
    assert opened and all(p.startswith("test/") for p in opened)


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no images"),
    ("one_class", "has one class (zero)"),
    ("no_test", "no train/ and test/"),
])
def test_unusable_folders_give_one_clear_error(tmp_path, capsys, case, message):
    root = tmp_path / "f"
    (root / "train" / "zero").mkdir(parents=True)
    if case != "no_test":
        (root / "test" / "zero").mkdir(parents=True)
    if case == "one_class":
        for split in ("train", "test"):
            Image.new("RGB", (9, 9), "white").save(root / split / "zero" / "a.png")
    rc = main(["--dataset", f"imagefolder:{root}", "--model", "lenet5", "--epochs", "1",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0] and err[0].startswith("xai-train: error:")
    assert not (tmp_path / "run").exists()


def test_truncated_jpegs_are_dropped_where_decoded(tmp_path, capsys):
    """A JPEG cut short passes the cheap listing check; training and evaluation drop it and go on."""
    root = tmp_path / "f"
    make_folder(root, test_per_class=6)
    capsys.readouterr()
    cut = []
    for split in ("train", "test"):
        jpg = sorted((root / split / "two").glob("*.jpg"))[0]
        jpg.write_bytes(jpg.read_bytes()[:-50])
        cut.append(jpg.relative_to(root).as_posix())
    out = tmp_path / "run"
    assert main(["--dataset", f"imagefolder:{root}", "--input-size", "24", "--model", "lenet5", "--epochs", "2",
                 "--batch-size", "4", "--val-fraction", "0", "--workers", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count(cut[0]) == 1 and err.count(cut[1]) == 1  # each named once, not once per epoch
    run = load_run(out)
    assert run.meta["dataset"]["num_test"] == 17 and cut[1] not in {f["path"] for f in load_test_files(out)}
    x, y = load_test_split(run.meta["dataset"], None, 24)  # the dashboard drops the same file
    assert len(x) == 17 and y.tolist() == run.predictions["label"].tolist()


def test_subsets_keep_every_class_and_the_dashboard_picks_the_same_files(folder, tmp_path):
    root, _ = folder
    out = tmp_path / "run"
    assert main(["--dataset", f"imagefolder:{root}", "--input-size", "16", "--model", "lenet5", "--epochs", "1",
                 "--train-subset", "9", "--test-subset", "6", "--workers", "0", "--out", str(out)]) == 0
    run = load_run(out)
    assert run.meta["dataset"]["num_train"] == 9 and run.meta["dataset"]["num_test"] == 6
    assert sorted(set(run.predictions["label"].tolist())) == [0, 1, 2]  # first 6 files would be one class
    x, y = load_test_split(run.meta["dataset"], None, 16)
    assert x.shape == (6, 3, 16, 16) and y.tolist() == run.predictions["label"].tolist()
