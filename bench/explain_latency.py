"""Explanation latency: Grad-CAM compute, batched precompute, the REST API over HTTP, and
upload-to-overlay in a real browser.

Uses the first CIFAR-10 run of the ``fast`` network (checkpoints/ first, then runs/), or
the RUN_DIR given. Prints one line per figure with its budget:

1. one Grad-CAM, 32x32 image, in process (compute only)              budget  10 ms
2. Grad-CAM for the whole test set, batched (predicted + true class)   budget  30 s
3. POST /api/predict over HTTP, p50 (gunicorn, 1 worker)              budget  15 ms
4. POST /api/explain gradcam png over HTTP, p50, cold and warm cache  budget  40 ms
5. upload -> overlay visible in headless Chromium                     budget   1 s

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/explain_latency.py [RUN_DIR]
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, TAB_XPATH, chromium, free_port


def find_fast_run() -> Path:
    from trainer.rundir import RunDirError, find_runs, load_run

    for root in (ROOT / "checkpoints", ROOT / "runs"):
        for d in find_runs(root) if root.is_dir() else []:
            try:
                run = load_run(d, check_predictions=False)
            except RunDirError:
                continue
            if run.meta["arch"] == "fast" and run.meta["dataset"]["name"] == "cifar10":
                return d
    sys.exit("no CIFAR-10 run of the fast network under checkpoints/ or runs/")


def pct(values, q=50) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def report(what: str, value: str, budget: str, ok: bool) -> None:
    print(f"{what:58s} {value:>16s}   budget {budget:>7s}   {'OK' if ok else 'OVER'}", flush=True)


def png_bytes(image, size: int | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.asarray(image).transpose(1, 2, 0))
    if size:
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _gradcam_upsample_then_relu(model, layer: str, x, target):
    """The order used before the fix (ReLU after upsampling), timed beside the current one: the
    ratio of the two is meaningful even when other jobs share the CPU."""
    import torch.nn.functional as F
    from captum.attr import LayerAttribution, LayerGradCam

    from xai_dashboard.explain import normalise_maps

    cam = LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=target)
    return normalise_maps(F.relu(LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]),
                                                              interpolate_mode="bilinear")[:, 0]))


def bench_compute(run, n: int) -> None:
    import torch

    from xai_dashboard import explain

    model, layer = explain.shared_model(run), run.meta["gradcam_layer"]
    default = torch.get_num_threads()
    for threads in sorted({default, 1}, reverse=True):
        torch.set_num_threads(threads)
        times = {"now": [], "before": []}
        for i in range(n + 10):  # interleaved, so both see the same load
            x = explain.to_input(run.images[i % len(run.images)], run.meta)
            target = int(run.preds[i % len(run.images)])
            for which, fn in (("now", explain.gradcam_maps), ("before", _gradcam_upsample_then_relu)):
                t = time.perf_counter()
                with run.lock:
                    fn(model, layer, x, target)
                times[which].append(time.perf_counter() - t)
        now, before = times["now"][10:], times["before"][10:]
        report(f"1. Grad-CAM 32x32, {layer}, {threads} thread(s): p50 (p90)",
               f"{pct(now):.2f} ({pct(now, 90):.1f}) ms", "10 ms", pct(now) <= 10)
        print(f"   vs. upsample-then-ReLU (before the fix), same run interleaved: p50 {pct(before):.2f} ms, "
              f"ratio now/before {pct(now) / pct(before):.3f}", flush=True)
    torch.set_num_threads(default)


def bench_precompute(run, batch_size: int) -> None:
    from xai_dashboard.precompute import precompute_gradcam

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run.run.path, copy, ignore=shutil.ignore_patterns("gradcam.npz"))
        t = time.perf_counter()
        precompute_gradcam(copy, images=run.images, labels=run.labels, batch_size=batch_size)
        took = time.perf_counter() - t
    wrong = int((run.preds != run.labels).sum())
    report(f"2. precompute {len(run.labels)} images (+{wrong} true-class maps), batch {batch_size}",
           f"{took:.1f} s", "30 s", took <= 30)


def start_server(run_dir: Path, data_dir: str, cache: str, threads: int) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    env = {**os.environ, "XAI_RUNS": str(run_dir), "XAI_DATA_DIR": data_dir, "XAI_CACHE_DIR": cache,
           "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "--timeout",
                             "120", "xai_dashboard.wsgi:server"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(url + "/api/runs", timeout=10).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.5)
    proc.kill()
    sys.exit("gunicorn did not start")


def bench_http(url: str, run, n: int) -> None:
    import requests

    files = [png_bytes(run.images[i]) for i in range(2 * n + 20)]
    s = requests.Session()

    def timed(route, data, fields):
        t = time.perf_counter()
        r = s.post(url + route, files={"file": ("x.png", data)}, data=fields, timeout=60)
        took = time.perf_counter() - t
        assert r.status_code == 200, r.text
        return took

    for f in files[:10]:
        timed("/api/predict", f, {})
    predict = [timed("/api/predict", f, {}) for f in files[10:10 + n]]
    report(f"3. POST /api/predict over HTTP, {n} requests: p50 (p90)",
           f"{pct(predict):.1f} ({pct(predict, 90):.1f}) ms", "15 ms", pct(predict) <= 15)
    fields = {"method": "gradcam", "format": "png"}
    cold = [timed("/api/explain", f, fields) for f in files[10 + n:10 + 2 * n]]
    report("4. POST /api/explain gradcam png, new images: p50 (p90)",
           f"{pct(cold):.1f} ({pct(cold, 90):.1f}) ms", "40 ms", pct(cold) <= 40)
    warm = [timed("/api/explain", f, fields) for f in files[10 + n:10 + 2 * n]]
    report("4b. POST /api/explain gradcam png, cached maps: p50 (p90)",
           f"{pct(warm):.1f} ({pct(warm, 90):.1f}) ms", "40 ms", pct(warm) <= 40)


def bench_browser(url: str, run, uploads: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    state = ("const i = document.querySelector('#gradcam-overlay');"
             "return [i ? i.src : '', !!(i && i.complete && i.naturalWidth > 0),"
             " (document.querySelector('#xp-source-label') || {}).textContent || ''];")
    with chromium() as driver, tempfile.TemporaryDirectory() as tmp:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "run-select"))
        driver.find_element(By.XPATH, TAB_XPATH.format("Explanations")).click()
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(state)[1])
        times = []
        for k in range(uploads + 1):  # the first upload warms the upload component's chunk
            path = Path(tmp) / f"upload{k}.png"
            path.write_bytes(png_bytes(run.images[500 + k], size=256))
            before = driver.execute_script(state)[0]
            t = time.perf_counter()
            driver.find_element(By.CSS_SELECTOR, "#upload-image input[type=file]").send_keys(str(path))
            while True:
                src, shown, label = driver.execute_script(state)
                if src != before and shown and path.name in label:
                    break
                if time.perf_counter() - t > 30:
                    raise TimeoutError("overlay never appeared")
                time.sleep(0.005)
            times.append(time.perf_counter() - t)
    times = times[1:]
    report(f"5. upload 256 px PNG -> overlay visible in Chromium, {uploads}x: p50 (max)",
           f"{pct(times):.0f} ({max(times) * 1000:.0f}) ms", "1000 ms", max(times) <= 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    p.add_argument("--n", type=int, default=200, help="requests / repetitions per figure")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--server-threads", type=int, default=1, help="torch threads in the gunicorn worker")
    p.add_argument("--uploads", type=int, default=5)
    p.add_argument("--skip", nargs="*", default=[], choices=["compute", "precompute", "http", "browser"])
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("set XAI_DATA_DIR (or --data-dir) to the CIFAR-10 npz folder")

    from xai_dashboard.store import RunStore

    run_dir = Path(args.run_dir) if args.run_dir else find_fast_run()
    run = RunStore.from_dirs([run_dir], args.data_dir).get(None)
    print(f"run {run.name} ({run.meta['arch']}), {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    if "compute" not in args.skip:
        bench_compute(run, args.n)
    if "precompute" not in args.skip:
        bench_precompute(run, args.batch_size)
    if {"http", "browser"} - set(args.skip):
        with tempfile.TemporaryDirectory() as cache:
            proc, url = start_server(run_dir, args.data_dir, cache, args.server_threads)
            try:
                if "http" not in args.skip:
                    bench_http(url, run, args.n)
                if "browser" not in args.skip:
                    bench_browser(url, run, args.uploads)
            finally:
                proc.terminate()
                proc.wait(20)
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
