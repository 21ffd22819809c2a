"""Memory of a production server under concurrent worst-case uploads to ``/api/predict``.

Starts gunicorn as the README does (``xai_dashboard/gunicorn_conf.py``: gthread, 12 threads; 2 workers,
``--preload``, ``xai_dashboard.wsgi:server`` over the shipped runs in ``checkpoints/``), sends
``--uploads`` tiny files that declare huge images all at once, and samples the
RSS of the master and each worker every 10 ms. Prints each process's RSS
before and at its peak, and the peak of their sum (RSS counts the pages the
workers share with the master after ``--preload`` once per process, so the
total overstates; PSS, which splits shared pages, is printed too).

    .venv/bin/python bench/upload_memory.py                        # 8 x the worst accepted upload
    .venv/bin/python bench/upload_memory.py --kind 16bit --uploads 4
    .venv/bin/python bench/upload_memory.py --root /tmp/old-checkout  # the same load on another tree

Kinds: ``rgb`` (a ~130 KB RGB PNG just inside the decode budget: the most a
single accepted upload may cost), ``16bit`` (the issue's 95 KB 16-bit
7000 x 7000 PNG), ``jpeg`` (the 800-byte JPEG claiming 7000 x 7000, now refused).
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image

from common import ROOT, free_port
from xai_dashboard.uploads import DEFAULT_DECODE_MB

MB = 2**20
LOG = Path("/tmp/xai-upload-memory.log")  # gunicorn's output, for when something fails


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def upload(kind: str) -> bytes:
    if kind == "rgb":
        side = int((DEFAULT_DECODE_MB * MB / 4) ** 0.5) - 8
        return png(Image.new("RGB", (side, side), (200, 30, 30)))
    if kind == "16bit":
        deep = np.zeros((7000, 7000), np.uint16)
        deep[:100, :100] = 60000
        return png(Image.fromarray(deep))
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):  # patch the frame header to claim 7000 x 7000
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = (7000).to_bytes(2, "big") * 2
    return bytes(data)


def warm_up(port: int) -> None:
    """Small predictions, 8 at once so both workers get some: each worker imports torch and loads
    the model on its first one, which is not what this benchmark measures."""
    small = png(Image.new("RGB", (32, 32), (10, 120, 200)))

    def send(i: int) -> int:
        files = {"file": (f"warm{i}.png", small)}
        return requests.post(f"http://127.0.0.1:{port}/api/predict", files=files, timeout=300).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(16)))
    if codes != [200] * 16:
        raise SystemExit(f"warm-up predictions failed: {codes}; see {LOG}")


def start(root: Path, data_dir: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "XAI_DATA_DIR": data_dir, "OMP_NUM_THREADS": "1",
           "XAI_CACHE_DIR": f"/tmp/xai-upload-memory-{port}", "PYTHONPATH": str(root)}
    log = open(LOG, "w")
    # A tree from before xai_dashboard/gunicorn_conf.py gets the README command of its day (the same 12 threads).
    conf = ["-c", "python:xai_dashboard.gunicorn_conf"] if (root / "xai_dashboard/gunicorn_conf.py").exists() \
        else ["-k", "gthread", "--threads", "12"]
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", *conf, "-w", "2", "--preload", "-b", f"127.0.0.1:{port}",
                             "--timeout", "300", "xai_dashboard.wsgi:server"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}; see {LOG}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/runs", timeout=5).status_code == 200:
                warm_up(port)
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit("gunicorn did not start in 300 s")


class Sampler(threading.Thread):
    """Memory of the master and its workers every 10 ms: per-process peaks and the peak of the sum.

    RSS counts the pages the workers share with the master (``--preload``) once per process, so
    its sum overstates the machine's cost; PSS splits shared pages between their users and sums
    to what the server really holds."""

    def __init__(self, master: psutil.Process):
        super().__init__(daemon=True)
        self.procs = [master, *master.children()]
        self.rest = self.sample()
        self.peak = dict(self.rest)
        self.total_rest = self.total_peak = {k: sum(v[k] for v in self.rest.values()) for k in ("rss", "pss")}
        self.stop = threading.Event()

    def sample(self) -> dict[int, dict[str, int]]:
        out = {}
        for p in self.procs:
            info = p.memory_full_info()
            out[p.pid] = {"rss": info.rss, "pss": info.pss}
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            now = self.sample()
            for pid, mem in now.items():
                self.peak[pid] = {k: max(self.peak[pid][k], mem[k]) for k in mem}
            self.total_peak = {k: max(self.total_peak[k], sum(v[k] for v in now.values())) for k in ("rss", "pss")}
            time.sleep(0.01)


def report(sampler: Sampler, master_pid: int) -> None:
    for p in sampler.procs:
        rest, peak = sampler.rest[p.pid], sampler.peak[p.pid]
        print(f"  {'master' if p.pid == master_pid else 'worker'} {p.pid}: "
              + ", ".join(f"{k.upper()} {rest[k] / MB:.0f} -> {peak[k] / MB:.0f} MB (+{(peak[k] - rest[k]) / MB:.0f})"
                          for k in ("rss", "pss")))
    for k in ("pss", "rss"):
        rest, peak = sampler.total_rest[k], sampler.total_peak[k]
        print(f"  total {k.upper()}: {rest / MB:.0f} MB at rest, "
              f"peak {peak / MB:.0f} MB (+{(peak - rest) / MB:.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=8)
    ap.add_argument("--kind", choices=("rgb", "16bit", "jpeg"), default="rgb")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to serve (default: this one)")
    ap.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR", str(ROOT.parent / "shared/data/cifar10")))
    args = ap.parse_args()

    data = upload(args.kind)
    port = free_port()
    proc = start(args.root.resolve(), args.data_dir, port)
    try:
        master = psutil.Process(proc.pid)
        sampler = Sampler(master)
        sampler.start()

        def send(i: int):
            files = {"file": (f"{i}.png", data)}
            r = requests.post(f"http://127.0.0.1:{port}/api/predict", files=files, timeout=300)
            return r.status_code, r.text[:120]

        start_time = time.perf_counter()
        with ThreadPoolExecutor(args.uploads) as pool:
            answers = list(pool.map(send, range(args.uploads)))
        seconds = time.perf_counter() - start_time
        time.sleep(0.2)
        sampler.stop.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"{args.uploads} concurrent '{args.kind}' uploads ({len(data):,} bytes each) to {args.root}: {seconds:.1f} s")
    statuses = {}
    for status, text in answers:
        statuses.setdefault(status, text)
    for status, text in sorted(statuses.items()):
        print(f"  HTTP {status} x {sum(s == status for s, _ in answers)}: {text}")
    report(sampler, proc.pid)


if __name__ == "__main__":
    main()
