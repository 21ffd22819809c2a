"""Image-folder runs at scale: nothing decoded at start-up, memory that does not grow with the
images, thumbnails from the user's original files (and a disk cache of them), a moved folder.

The runs are honest run directories over JPEGs written here (64 x 40 px, so a thumbnail's
shape tells the original photo from the network's square input): an untrained ``simple_cnn``
whose sha256 the meta records, random logits, and the test file list the trainer records.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from trainer.folders import FileList
from trainer.models import create_model
from trainer.preprocess import pil_to_array
from trainer.rundir import write_json, write_predictions, write_test_files, write_weights
from xai_dashboard import images
from xai_dashboard.app import create_app, warm_up
from xai_dashboard.image_source import FolderTestImages
from xai_dashboard.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "dog", "fox"]
WIDTH, HEIGHT = 64, 40  # the files
INPUT = 32  # the network's input: 3 KB a decoded image, which the old in-memory array held for each


def make_folder_run(tmp: Path, n: int, exif_rotated: int | None = None) -> Path:
    """``tmp/data/test/CLASS/*.jpg`` (``n`` images) and the run directory ``tmp/run`` evaluated on them.
    ``exif_rotated``: the index of one file saved with EXIF orientation 6 (camera turned 90°)."""
    rng = np.random.default_rng(n)
    labels = np.sort(rng.integers(0, len(CLASSES), n))
    records = []
    for i, y in enumerate(labels):
        path = Path("test") / CLASSES[y] / f"{i:05d}.jpg"
        (tmp / "data" / path).parent.mkdir(parents=True, exist_ok=True)
        # left half dark, right half bright: survives JPEG and shows which way the image is turned
        px = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        px[:, WIDTH // 2:] = 200 + y * 20
        exif = Image.Exif()
        if i == exif_rotated:
            exif[0x0112] = 6
        Image.fromarray(px).save(tmp / "data" / path, quality=90, exif=exif)
        records.append({"path": path.as_posix(), "label": int(y), "size": (tmp / "data" / path).stat().st_size})
    files = FileList(tmp / "data", tuple(r["path"] for r in records), labels,
                     np.asarray([r["size"] for r in records], dtype=np.int64))
    out = tmp / "run"
    model = create_model("simple_cnn", num_classes=len(CLASSES), in_channels=3)
    sha = write_weights(out, model.state_dict())
    write_test_files(out, files.records())
    logits = (rng.normal(size=(n, len(CLASSES))) + 2 * np.eye(len(CLASSES))[labels]).astype(np.float32)
    write_predictions(out, index=np.arange(n), label=labels, logits=logits, embedding=np.zeros((n, 4)),
                      weights_sha256=sha)
    meta = json.loads((ROOT / "checkpoints" / "digits-demo" / "meta.json").read_text())
    spec = f"imagefolder:{tmp / 'data'}"
    meta.update(
        arch="simple_cnn", arch_kwargs={}, num_classes=len(CLASSES), in_channels=3, class_names=CLASSES,
        input_size=INPUT, mean=[0.5] * 3, std=[0.25] * 3, gradcam_layer=model.gradcam_layer,
        layers=[{"name": "features.block1", "shape": [32, 16, 16]}, {"name": "features.block2", "shape": [64, 8, 8]},
                {"name": "classifier.fc1", "shape": [512]}],
        weights_sha256=sha, num_parameters=sum(p.numel() for p in model.parameters()), epochs_completed=None,
        test_accuracy=float((logits.argmax(1) == labels).mean()), test_accuracy_tta=None,
        dataset={"name": "imagefolder:data", "fingerprint": files.fingerprint(), "num_train": 0, "num_test": n,
                 "spec": spec, "test_subset": None, "train_subset": None},
    )
    meta["config"] = {**meta["config"], "model": "simple_cnn", "dataset": spec, "input_size": INPUT, "out": str(out)}
    write_json(out / "meta.json", meta)
    return out


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """Every image file decoded from now on (``ImageFile.load`` is where Pillow decodes pixels)."""
    seen, real = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: seen.append(self.filename) or real(self))
    return seen


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(images, "THUMBNAILS", images.ByteLRU(2**20))


def test_start_up_and_pages_decode_no_image(tmp_path, decoded, isolated_caches):
    run_dir = make_folder_run(tmp_path, 120)
    app = create_app([run_dir])
    store = app.server.config["XAI_STORE"]
    warm_up(store)
    client = app.server.test_client()
    assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200
    run = store.get(None)
    assert isinstance(run.images, FolderTestImages) and run.images.shape == (120, 3, INPUT, INPUT)
    assert len(run.images) == 120 and store.banner is None
    assert decoded == []
    r = client.get(f"/img/{run.name}/5.png?size=32")  # the first image shown is the first one decoded
    assert r.status_code == 200 and decoded


def test_network_inputs_are_the_trainers_preprocessing_on_demand(tmp_path, monkeypatch):
    import trainer.folders as folders

    run = RunStore.from_dirs([make_folder_run(tmp_path, 30)]).get(None)
    x = run.images
    want = np.stack([pil_to_array(Image.open(x.path(i)), INPUT, 3) for i in (3, 29, 0)])
    decoded, real = [], folders.decode
    monkeypatch.setattr(folders, "decode", lambda root, path, *a: decoded.append(path) or real(root, path, *a))
    assert np.array_equal(x[3], want[0]) and x[3].dtype == np.uint8 and x[3].shape == (3, INPUT, INPUT)
    assert np.array_equal(x[np.array([3, -1, 0])], want)
    assert x[10:14].shape == (4, 3, INPUT, INPUT) and x[np.array([], dtype=np.int64)].shape == (0, 3, INPUT, INPUT)
    mask = run.labels == run.labels[-1]
    assert np.array_equal(x[mask], np.stack([x[int(i)] for i in np.flatnonzero(mask)]))
    # each file decoded once: the LRU answers every later request for it
    assert sorted(decoded) == sorted({x.files.paths[i] for i in [3, 29, 0, 10, 11, 12, 13, *np.flatnonzero(mask)]})
    x[3][:] = 0  # a caller's copy: the next caller still gets the image
    assert np.array_equal(x[3], want[0])
    with pytest.raises(IndexError):
        x[30]
    with pytest.raises(TypeError):
        np.asarray(x)  # all at once is exactly what this object exists to avoid


def test_thumbnails_come_from_the_original_file_and_the_disk_cache(tmp_path, decoded, isolated_caches):
    run_dir = make_folder_run(tmp_path, 20, exif_rotated=7)
    app = create_app([run_dir])
    client, run = app.server.test_client(), app.server.config["XAI_STORE"].get(None)
    r = client.get(f"/img/{run.name}/4.jpg?size=32")
    thumb = Image.open(io.BytesIO(r.data))
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert thumb.size == (32, 20)  # the photo's 64:40, not the network's square 32 x 32 crop
    original = Image.open(run.images.path(4)).convert("RGB").resize((32, 20))
    assert np.abs(np.asarray(thumb, np.int16) - np.asarray(original, np.int16)).mean() < 6
    rotated = Image.open(io.BytesIO(client.get(f"/img/{run.name}/7.jpg?size=32").data))
    assert rotated.size == (20, 32)  # EXIF orientation applied, as the user's photo viewer shows it
    big = Image.open(io.BytesIO(client.get(f"/img/{run.name}/4.jpg?size=256").data))
    assert big.size == (WIDTH, HEIGHT)  # never enlarged: the real photo

    images.THUMBNAILS = images.ByteLRU(2**20)  # as after a restart, or in another worker: only the disk has it
    decoded.clear()
    again = client.get(f"/img/{run.name}/4.jpg?size=32")
    assert again.data == r.data and decoded == []
    stored = images.thumbnail_disk().get(f"thumb/{run.meta['dataset']['fingerprint']}/4/32.jpg")
    assert stored == r.data  # raw bytes, nothing pickled
    assert images.thumbnail_disk().directory.endswith("thumbnails")
    assert Path(images.thumbnail_disk().directory).stat().st_mode & 0o077 == 0


def test_a_moved_folder_is_named_and_found_again_with_data_dir(tmp_path):
    run_dir = make_folder_run(tmp_path, 12)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "data").rename(moved / "data")
    store = RunStore.from_dirs([run_dir])
    assert store.names == ["digits-demo"] and f"folder not found: {tmp_path / 'data'}" in store.banner
    for where in (moved, moved / "data"):  # the folder itself, or the folder holding it
        store = RunStore.from_dirs([run_dir], data_dir=str(where))
        assert store.names == ["run"] and store.get(None).images.files.root == moved / "data"
        assert store.get(None).images[0].shape == (3, INPUT, INPUT)


PROBE = r"""
import gc, json, sys
from xai_dashboard.app import create_app, warm_up
app = create_app([sys.argv[1]])
store = app.server.config["XAI_STORE"]
warm_up(store)
client = app.server.test_client()
assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200
gc.collect()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"runs": store.names, "images": len(store.get(None).images),
                  "rss": int(status["VmRSS"].split()[0]) * 1024,
                  "heavy": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision"})}))
"""


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    rss = {}
    for n in (200, 2000):
        run_dir = make_folder_run(tmp_path / str(n), n)
        out = subprocess.run([sys.executable, "-c", PROBE, str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env={"XAI_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path),
                                               "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr[-3000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["runs"] == ["run"] and got["images"] == n
        assert got["heavy"] == []  # the folder is not listed (torchvision) nor any model loaded
        rss[n] = got["rss"]
    per_image = (rss[2000] - rss[200]) / 1800
    # An in-memory array would hold 3 KB a decoded image (3 x 32 x 32); what is left is the file list,
    # the predictions and their summary: a few hundred bytes an image.
    assert per_image < 2048, f"{per_image:.0f} bytes more per test image ({rss})"
