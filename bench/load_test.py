"""Load test: gunicorn (the README's command, 2 workers) under 32 locust users for 2 minutes.

Prints, against the hardening issue's targets: 5xx count (0), predict p95 while IG runs
(≤ 100 ms), total RSS of the gunicorn master and workers, sampled every 0.5 s (≤ 2.5 GB).

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/load_test.py [--runs RUN ...] [--time 2m]

locust lives in its own virtual environment (`make bench` creates `.venv-locust`): it needs
urllib3 2, which the browser-test stack of `.venv` (selenium) does not allow.
"""
from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCUST = ROOT / ".venv-locust" / "bin" / "locust"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import requests

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"gunicorn exited with {proc.returncode}")
        try:
            if requests.get(url + "/api/runs", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    sys.exit("gunicorn did not answer in time")


def sample_memory(pid: int, stop: threading.Event, peaks: dict) -> None:
    """Peaks of the master's and workers' summed RSS and summed PSS, and each process's own RSS peak.

    RSS counts the pages the preloaded master shares with its workers once per process; PSS
    splits shared pages between them, so its sum is what the server really occupies.
    """
    master = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [master, *master.children(recursive=True)]
            rss = pss = 0
            for p in procs:
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
                peaks[p.pid] = max(peaks.get(p.pid, 0), info.rss)
            peaks["total"] = max(peaks.get("total", 0), rss)
            peaks["pss"] = max(peaks.get("pss", 0), pss)
        except psutil.Error:
            pass
        time.sleep(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=None, help="run directories (default: every shipped run)")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--time", default="2m")
    ap.add_argument("--locust", default=str(LOCUST), help="the locust executable (default: .venv-locust)")
    args = ap.parse_args()
    if not Path(args.locust).is_file():
        sys.exit(f"{args.locust}: not found; run `make bench` or pass --locust")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "XAI_CACHE_DIR": tempfile.mkdtemp(prefix="xai-load-cache-")}
    if args.runs:
        env["XAI_RUNS"] = os.pathsep.join(args.runs)
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "4", "-w", "2", "--preload",
         "-b", f"127.0.0.1:{port}", "xai_dashboard.wsgi:server"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop, peaks = threading.Event(), {}
    try:
        wait_until_up(url, server)
        sampler = threading.Thread(target=sample_memory, args=(server.pid, stop, peaks), daemon=True)
        sampler.start()
        out = Path(tempfile.mkdtemp(prefix="xai-load-")) / "locust"
        subprocess.run([args.locust, "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
                        "-u", str(args.users + 1), "-r", "8", "-t", args.time, "--host", url,
                        "--csv", str(out), "--only-summary"], check=False, cwd=ROOT, env=env)
        stop.set()
        report(Path(f"{out}_stats.csv"), peaks, server.pid)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    return 0


def report(stats_csv: Path, peaks: dict, master: int) -> None:
    rows = list(csv.DictReader(stats_csv.open()))
    print(f"\n{'request':18s} {'count':>7s} {'fail':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for r in rows:
        print(f"{r['Name']:18s} {r['Request Count']:>7s} {r['Failure Count']:>6s} {r['50%']:>8s} "
              f"{r['95%']:>8s} {r['99%']:>8s}")
    failures = Path(str(stats_csv).replace("_stats.csv", "_failures.csv"))
    fails = list(csv.DictReader(failures.open())) if failures.exists() else []
    server_errors = sum(int(f["Occurrences"]) for f in fails if f["Error"].strip().startswith(("5", "HTTPError('5")))
    predict = next((r for r in rows if r["Name"] == "predict"), None)
    print(f"\n5xx answers: {server_errors} (target 0)")
    if predict:
        print(f"predict p95 while IG runs: {predict['95%']} ms (target ≤ 100 ms)")
    workers = {k: v for k, v in peaks.items() if k not in ("total", "pss", master)}
    print(f"peak PSS (shared pages split): total {peaks.get('pss', 0) / 2**30:.2f} GB")
    print(f"peak RSS: total {peaks.get('total', 0) / 2**30:.2f} GB (target ≤ 2.5 GB); master "
          f"{peaks.get(master, 0) / 2**20:.0f} MB; workers "
          + ", ".join(f"{v / 2**20:.0f} MB" for v in workers.values()))


if __name__ == "__main__":
    sys.exit(main())
