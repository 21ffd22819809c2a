"""The dashboard on a big image folder: start-up, memory and confusion-cell -> thumbnails latency.

``generate`` writes a test folder of ``--test`` JPEGs (CIFAR-10 test images upscaled to
``--size`` px, each with its own crop and colour jitter: bench/make_image_folder.py's
``_write``), two training images per class (the layout needs them), and a run directory
for it: a small untrained network and random-but-plausible logits (this measures the
dashboard, not a model). ``measure`` launches ``xai-dashboard`` on that run and prints

1. start-up: launch -> ``/`` and the overview callback answer (median of ``--launches``);
2. RSS of the server once the overview answered and after the clicks;
3. click on a confusion cell -> the gallery callback answered and all its thumbnails
   fetched over HTTP (``--clicks`` distinct cells, each with a cold thumbnail disk cache).

Both write only outside the repository::

    .venv/bin/python bench/big_folder.py generate --out /tmp/big224 --test 100000 --size 224
    .venv/bin/python bench/big_folder.py measure --out /tmp/big224
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import ROOT, callback_body, launch, load_average, pct, show
from make_image_folder import _write  # one JPEG, seeded: the same folder every time

TRAIN_PER_CLASS = 2
INPUT_SIZE = 32  # the network's input (as the shipped simple_cnn); the files stay at --size, thumbnails come from them


def _outside_repo(path: Path) -> Path:
    path = path.expanduser().resolve()
    if path == ROOT or ROOT in path.parents:
        raise SystemExit(f"big_folder: --out {path} is inside the repository; write generated data elsewhere")
    return path


def generate_folder(out: Path, n_test: int, size: int, data_dir: str | None, workers: int) -> list[dict]:
    """Write ``out/{train,test}/CLASS/*.jpg``; returns the test records ``[{path, label, size}]`` sorted
    as the trainer lists them (by class, then file name)."""
    from trainer.sources import read_dataset

    ds = read_dataset("cifar10", data_dir, train=False)
    for split in ("train", "test"):
        for c in ds.classes:
            (out / split / c).mkdir(parents=True, exist_ok=True)
    jobs, records = [], []
    for i in range(n_test):  # cycles over the 10,000 CIFAR test images; the seed makes each file differ
        label = int(ds.test_y[i % len(ds.test_y)])
        rel = f"test/{ds.classes[label]}/{i:06d}.jpg"
        jobs.append((ds.test_x[i % len(ds.test_y)].transpose(1, 2, 0).copy(), out / rel, size, 2 * i + 1, 90))
        records.append({"path": rel, "label": label})
    for c, name in enumerate(ds.classes):
        first = int(np.flatnonzero(ds.test_y == c)[0])
        for j in range(TRAIN_PER_CLASS):
            jobs.append((ds.test_x[first].transpose(1, 2, 0).copy(), out / f"train/{name}/{j}.jpg", size, 2 * j, 90))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_write, jobs, chunksize=256))
    for rec, nbytes in zip(records, sizes):
        rec["size"] = nbytes
    print(f"wrote {len(jobs):,} JPEGs ({size} px, {sum(sizes) / 1e6:,.0f} MB) to {out} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    return sorted(records, key=lambda r: (r["label"], r["path"]))


def write_run(run_dir: Path, folder: Path, records: list[dict], classes: list[str]) -> None:
    """A run directory whose test split is ``records``: an untrained ``simple_cnn`` and logits that are
    right ~80% of the time, confidently wrong now and then (so every confusion cell has images)."""
    from trainer.folders import FileList
    from trainer.models import create_model
    from trainer.rundir import write_json, write_predictions, write_test_files, write_weights

    labels = np.asarray([r["label"] for r in records], dtype=np.int64)
    files = FileList(folder, tuple(r["path"] for r in records), labels,
                     np.asarray([r["size"] for r in records], dtype=np.int64))
    k, rng = len(classes), np.random.default_rng(0)
    logits = rng.normal(0.0, 1.0, (len(labels), k)) + 3.0 * np.eye(k)[labels]
    model = create_model("simple_cnn", num_classes=k, in_channels=3)
    run_dir.mkdir(parents=True, exist_ok=True)
    sha = write_weights(run_dir, model.state_dict())
    write_test_files(run_dir, files.records())
    write_predictions(run_dir, index=np.arange(len(labels)), label=labels, logits=logits.astype(np.float32),
                      embedding=rng.normal(size=(len(labels), 16)), weights_sha256=sha)
    meta = json.loads((ROOT / "checkpoints" / "cifar10-simple_cnn" / "meta.json").read_text())
    spec = f"imagefolder:{folder}"
    meta.update(
        input_size=INPUT_SIZE, weights_sha256=sha, class_names=classes, epochs_completed=None,
        test_accuracy=float((logits.argmax(1) == labels).mean()), test_accuracy_tta=None,
        dataset={"name": f"imagefolder:{folder.name}", "fingerprint": files.fingerprint(),
                 "num_train": TRAIN_PER_CLASS * k, "num_test": len(labels), "spec": spec,
                 "test_subset": None, "train_subset": None},
    )
    meta["config"] = {**meta["config"], "dataset": spec, "input_size": INPUT_SIZE, "out": str(run_dir)}
    write_json(run_dir / "meta.json", meta)


def generate(args) -> int:
    from trainer.folders import default_workers
    from trainer.sources import read_dataset

    out = _outside_repo(args.out)
    folder = out / "data"
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"big_folder: {folder} exists and is not empty")
    records = generate_folder(folder, args.test, args.size, args.data_dir, args.workers or default_workers())
    classes = list(read_dataset("cifar10", args.data_dir, train=False).classes)
    write_run(out / "run", folder, records, classes)
    print(f"run directory: {out / 'run'}")
    return 0


def image_urls(node) -> list[str]:
    """Every ``/img/...`` ``src`` in a callback response, in page order."""
    if isinstance(node, dict):
        src = node.get("src")
        own = [src] if isinstance(src, str) and "/img/" in src else []
        return own + [u for v in node.values() for u in image_urls(v)]
    if isinstance(node, list):
        return [u for v in node for u in image_urls(v)]
    return []


def rss_of(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def start(run_dir: Path, port: int, cache: str) -> tuple:
    """Launch the dashboard; returns (process, seconds until ``/`` and the overview callback answered, deps)."""
    import requests

    url, t0 = f"http://127.0.0.1:{port}", time.perf_counter()
    proc = launch([run_dir], None, port, cache)
    while True:
        try:
            if requests.get(url + "/", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > 120:
            raise SystemExit("the dashboard did not start")
        time.sleep(0.02)
    deps = requests.get(url + "/_dash-dependencies", timeout=30).json()
    body = callback_body(deps, "overview-cards.children", {"run-select.value": run_dir.name}, "run-select.value")
    r = requests.post(url + "/_dash-update-component", json=body, timeout=60)
    assert r.status_code == 200 and "metric" in r.text, r.text[:500]
    return proc, time.perf_counter() - t0, deps


def cpu_of(pid: int) -> float:
    """CPU seconds process ``pid`` used: the wall time it would take on an uncontended core."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def click_cells(run_dir: Path, port: int, deps: list[dict], clicks: int) -> tuple[list[float], list[float], int]:
    """(seconds per click: gallery callback answered + all its thumbnails fetched, 6 at a time like a
    browser; seconds of the callback alone; thumbnails fetched), over ``clicks`` distinct confusion cells."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import requests

    url = f"http://127.0.0.1:{port}"
    meta = json.loads((run_dir / "meta.json").read_text())
    names = meta["class_names"]
    with np.load(run_dir / "predictions.npz") as p:
        labels, preds = p["label"], p["logits"].argmax(1)
    cells = sorted({(int(t), int(q)) for t, q in zip(labels, preds) if t != q})
    random.Random(0).shuffle(cells)
    session, total, callback, fetched = requests.Session(), [], [], 0
    with ThreadPoolExecutor(6) as pool:
        for t, q in cells[:clicks]:
            click = {"points": [{"x": names[q], "y": names[t], "pointNumber": [t, q]}]}
            body = callback_body(deps, "gallery.children", {
                "confusion-matrix.clickData": click, "run-select.value": run_dir.name,
                "gallery-sort.value": "confidence", "gallery-prev.n_clicks": 0, "gallery-next.n_clicks": 0,
                "view-tabs.value": "errors", "gallery-page.data": 0}, "confusion-matrix.clickData")
            t0 = time.perf_counter()
            r = session.post(url + "/_dash-update-component", json=body, timeout=60)
            callback.append(time.perf_counter() - t0)
            srcs = image_urls(r.json()["response"])
            assert r.status_code == 200 and srcs, r.text[:500]
            codes = list(pool.map(lambda u: requests.get(url + u, timeout=60).status_code, srcs))
            total.append(time.perf_counter() - t0)
            assert set(codes) == {200}, codes
            fetched += len(srcs)
    return total, callback, fetched


def measure(args) -> int:
    import tempfile

    run_dir = _outside_repo(args.out) / "run"
    n = json.loads((run_dir / "meta.json").read_text())["dataset"]["num_test"]
    print(f"{run_dir}: {n:,} test images; machine: {os.cpu_count()} CPU cores, load average "
          f"{load_average()}")
    with tempfile.TemporaryDirectory() as caches:
        walls, cpus, proc = [], [], None
        for i in range(args.launches):  # each with an empty user cache: summary computed, thumbnails cold
            if proc is not None:
                proc.terminate()
                proc.wait(20)
            proc, seconds, deps = start(run_dir, args.port, os.path.join(caches, str(i)))
            walls.append(seconds)
            cpus.append(cpu_of(proc.pid))
        try:
            rss_start = rss_of(proc.pid)
            print(f"start-up: launch -> / and the overview callback answered: median {np.median(walls):.2f} s wall, "
                  f"{np.median(cpus):.2f} s server CPU (each: {', '.join(f'{w:.2f}' for w in walls)} s)")
            print(f"RSS once the overview answered: {rss_start / 2**20:,.0f} MiB")
            total, callback, fetched = click_cells(run_dir, args.port, deps, args.clicks)
            print(f"confusion-cell click, cold thumbnail caches ({len(total)} distinct cells, {fetched} thumbnails):")
            show("gallery callback", callback)
            show("callback + every thumbnail fetched", total)
            rss_end = rss_of(proc.pid)
            print(f"RSS after the clicks: {rss_end / 2**20:,.0f} MiB")
        finally:
            proc.terminate()
            proc.wait(20)
    print("summary " + json.dumps({"images": n, "startup_s": round(float(np.median(walls)), 2),
                                   "startup_cpu_s": round(float(np.median(cpus)), 2),
                                   "rss_mib": round(max(rss_start, rss_end) / 2**20),
                                   "click_p95_ms": round(pct(total, 95)), "callback_p95_ms": round(pct(callback, 95))}))
    print("targets: start-up <= 3 s; RSS <= 1536 MiB; click -> thumbnails p95 <= 300 ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the image folder and its run directory")
    g.add_argument("--out", required=True, type=Path, help="folder to create, outside the repository")
    g.add_argument("--test", type=int, default=100_000, help="test images")
    g.add_argument("--size", type=int, default=224, help="image side in pixels")
    g.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"), help="folder with cifar10_test.npz")
    g.add_argument("--workers", type=int, default=None, help="processes (default: the CPU cores)")
    m = sub.add_parser("measure", help="start-up, RSS and click -> thumbnails of the dashboard on that run")
    m.add_argument("--out", required=True, type=Path, help="the folder given to generate")
    m.add_argument("--launches", type=int, default=3, help="start-ups (the median is reported)")
    m.add_argument("--clicks", type=int, default=40, help="distinct confusion cells to click")
    m.add_argument("--port", type=int, default=8766)
    args = ap.parse_args(argv)
    return generate(args) if args.command == "generate" else measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
