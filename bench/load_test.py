"""Load test: gunicorn (the README's command, 2 workers) under 32 locust users for 2 minutes.

Prints one summary block against the hardening issue's targets: 5xx count (0), predict p50/p95
while IG runs (p95 <= 100 ms), the peak of the master's and workers' summed RSS (<= 2.5 GB), with
PSS beside it, each process's RSS split into anonymous memory and mapped files at start and at the
peak, and the machine's 1-minute load average during the run (other work on the cores shows there).

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/load_test.py [--runs RUN ...] [--time 2m]

``--arena-max 2`` sets glibc's ``MALLOC_ARENA_MAX`` for the server, ``--threads`` overrides the 12 of
``xai_dashboard/gunicorn_conf.py`` (the attribution queue follows it: one place per thread).
locust lives in its own virtual environment (`make bench` creates `.venv-locust`): it needs
urllib3 2, which the browser-test stack of `.venv` (selenium) does not allow.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from common import ROOT, free_port

BIN = Path(sys.executable).parent
LOCUST = ROOT / ".venv-locust" / "bin" / "locust"
LOG = Path("/tmp/xai-load-test.log")  # gunicorn's output, for when something fails


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import requests

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"gunicorn exited with {proc.returncode}; see {LOG}")
        try:
            if requests.get(url + "/api/runs", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    sys.exit("gunicorn did not answer in time")


def memory(proc: psutil.Process) -> dict:
    """RSS, its anonymous and file-backed parts (``/proc/PID/status``) and PSS of one process, in bytes."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    return {"rss": proc.memory_info().rss, "anon": int(status["RssAnon"].split()[0]) * 1024,
            "file": int(status["RssFile"].split()[0]) * 1024, "pss": proc.memory_full_info().pss}


def sample(pid: int, stop: threading.Event, seen: dict) -> None:
    """Every second: each process's memory (the master first) and the load average.

    ``seen``: ``start`` (the first sample), ``peak`` (the sample with the largest summed RSS),
    ``peak_pss``, ``loads``. Summed RSS counts the pages the preloaded master shares with its
    workers (torch's libraries, the test images) once per process; PSS splits shared pages
    between the processes, so its sum is what the server really occupies.
    """
    master = psutil.Process(pid)
    while not stop.is_set():
        try:
            snap = [memory(p) for p in (master, *master.children(recursive=True))]
        except (psutil.Error, OSError, KeyError):
            snap = None
        if snap:
            seen.setdefault("start", snap)
            if sum(m["rss"] for m in snap) > sum(m["rss"] for m in seen.get("peak", snap[:0])):
                seen["peak"] = snap
            seen["peak_pss"] = max(seen.get("peak_pss", 0), sum(m["pss"] for m in snap))
        seen.setdefault("loads", []).append(os.getloadavg()[0])
        stop.wait(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=None, help="run directories (default: every shipped run)")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--time", default="2m")
    ap.add_argument("--threads", type=int, default=None, help="gunicorn threads per worker (default: its config's 12)")
    ap.add_argument("--arena-max", type=int, default=0, help="MALLOC_ARENA_MAX (default: unset, glibc's own)")
    ap.add_argument("--locust", default=str(LOCUST), help="the locust executable (default: .venv-locust)")
    args = ap.parse_args()
    if not Path(args.locust).is_file():
        sys.exit(f"{args.locust}: not found; run `make bench` or pass --locust")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cache = tempfile.mkdtemp(prefix="xai-load-cache-")  # every request a miss; removed at the end
    env = {**os.environ, "XAI_CACHE_DIR": cache}
    env.pop("MALLOC_ARENA_MAX", None)
    if args.arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.arena_max)
    if args.runs:
        env["XAI_RUNS"] = os.pathsep.join(args.runs)
    threads = ["--threads", str(args.threads)] if args.threads else []
    command = [str(BIN / "gunicorn"), "-c", "python:xai_dashboard.gunicorn_conf", *threads, "-w", "2", "--preload",
               "-b", f"127.0.0.1:{port}", "xai_dashboard.wsgi:server"]
    log = open(LOG, "w")  # a file, not a pipe nobody reads: a full pipe would block the server
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    stop, seen = threading.Event(), {}
    try:
        wait_until_up(url, server)
        sampler = threading.Thread(target=sample, args=(server.pid, stop, seen), daemon=True)
        sampler.start()
        out = Path(tempfile.mkdtemp(prefix="xai-load-")) / "locust"
        subprocess.run([args.locust, "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
                        "-u", str(args.users + 1), "-r", "8", "-t", args.time, "--host", url,
                        "--csv", str(out), "--only-summary"], check=False, cwd=ROOT, env=env)
        stop.set()
        sampler.join()
        setting = f"MALLOC_ARENA_MAX={env.get('MALLOC_ARENA_MAX', 'unset')} " + " ".join(command[1:-3])
        report(Path(f"{out}_stats.csv"), seen, setting)
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(timeout=60)  # gunicorn lets requests in flight finish (its graceful timeout, 30 s)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(cache, ignore_errors=True)
    return 0


def report(stats_csv: Path, seen: dict, setting: str) -> None:
    rows = list(csv.DictReader(stats_csv.open()))
    print(f"\n=== load test summary: gunicorn {setting}")
    print(f"{'request':18s} {'count':>7s} {'fail':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for r in rows:
        print(f"{r['Name']:18s} {r['Request Count']:>7s} {r['Failure Count']:>6s} {r['50%']:>8s} "
              f"{r['95%']:>8s} {r['99%']:>8s}")
    failures = Path(str(stats_csv).replace("_stats.csv", "_failures.csv"))
    fails = list(csv.DictReader(failures.open())) if failures.exists() else []
    # locust words them "HTTPError('503 Server Error ...')" or, for checked responses, "CatchResponseError('503')"
    server_errors = sum(int(f["Occurrences"]) for f in fails if re.search(r"\b5\d\d\b", f["Error"]))
    predict = next((r for r in rows if r["Name"] == "predict"), {"50%": "-", "95%": "-"})
    loads = seen.get("loads") or [float("nan")]
    gb = lambda snap, k: sum(m[k] for m in snap) / 2**30  # noqa: E731
    print(f"5xx answers: {server_errors} (target 0)")
    print(f"predict while IG runs: p50 {predict['50%']} ms, p95 {predict['95%']} ms (target p95 <= 100 ms)")
    print(f"load average (1 min) during the run: min {min(loads):.1f}, mean {sum(loads) / len(loads):.1f}, "
          f"max {max(loads):.1f} on {os.cpu_count()} CPUs")
    if "peak" not in seen:
        print("memory: no sample")
        return
    print(f"peak summed RSS: {gb(seen['peak'], 'rss'):.2f} GB (target <= 2.5 GB); peak summed PSS: "
          f"{seen['peak_pss'] / 2**30:.2f} GB (shared pages split between processes)")
    for when in ("start", "peak"):
        print(f"  at {when:5s} (MB, master first) RSS = anon + file: " + "; ".join(
            f"{m['rss'] / 2**20:.0f} = {m['anon'] / 2**20:.0f} + {m['file'] / 2**20:.0f} (PSS {m['pss'] / 2**20:.0f})"
            for m in seen[when]) + f"; summed RSS {gb(seen[when], 'rss'):.2f} GB")


if __name__ == "__main__":
    sys.exit(main())
