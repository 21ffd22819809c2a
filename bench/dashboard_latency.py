"""Dashboard latency and memory: what a confusion-cell click costs, where, and the process size.

Measures, on the CIFAR-10 runs (default: every CIFAR-10 run under checkpoints/,
else under runs/; or the RUN_DIRs given):

1. start-up: launch ``xai-dashboard`` -> overview metrics visible in headless
   Chromium: the very first launch (empty analysis cache ``XAI_CACHE_DIR``, empty
   browser cache), then relaunches for a new and for a returning browser;
2. server side, in process: the pure path (cell indices -> sort -> page ->
   gallery components -> JSON) per cell click, cold and warm caches;
3. server side, over HTTP: ``POST /_dash-update-component`` with the browser's
   real payload through Flask's test client;
4. in the browser: click -> every gallery thumbnail decoded, timed inside the
   page (``performance.now()``), over ``--clicks`` distinct cells;
5. RSS of the live server process with the runs loaded, after the clicks.

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/dashboard_latency.py
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from common import (
    ROOT, TAB_XPATH, callback_body, chromium, launch, load_average, pct, show, timed, wait_for_server, wait_until_idle,
)
from trainer.rundir import RunDirError, find_runs, load_run
from xai_dashboard import analysis

# Runs in the page: fire the heatmap click, then resolve once the gallery shows the expected
# first image and every thumbnail in it has been decoded.
CLICK_JS = """
const [x, y, row, col, expected, done] = arguments;
const gd = document.querySelector('#confusion-matrix .js-plotly-plot');
const t0 = performance.now();
gd.emit('plotly_click', {points: [{x: x, y: y, curveNumber: 0, pointNumber: [row, col]}]});
function ready() {
  const items = document.querySelectorAll('#gallery .gallery-item');
  if (!items.length || items[0].getAttribute('data-index') !== String(expected)) return false;
  return Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete && i.naturalWidth > 0);
}
(function poll() {
  if (ready()) return done(performance.now() - t0);
  if (performance.now() - t0 > 20000) return done(-1);
  requestAnimationFrame(poll);
})();
"""


def default_runs() -> list[Path]:
    """The first two complete CIFAR-10 runs, shipped ones (checkpoints/) before local ones (runs/)."""
    found = []
    for root in (ROOT / "checkpoints", ROOT / "runs"):
        for d in find_runs(root) if root.is_dir() else []:
            try:
                if load_run(d).meta["dataset"]["name"] == "cifar10":
                    found.append(d)
            except RunDirError:
                pass  # still being written
    if not found:
        raise SystemExit("no CIFAR-10 run found under checkpoints/ or runs/; pass RUN_DIRs")
    return found[:2]


def bench_in_process(run_dirs, data_dir) -> dict:
    from plotly.io.json import to_json_plotly

    from xai_dashboard.app import create_app
    from xai_dashboard.views import prediction_items

    app = create_app(run_dirs, data_dir)
    store = app.server.config["XAI_STORE"]
    run = store.get(store.default)
    names, k = run.class_names, len(run.class_names)
    p = analysis.predictions_of(run)
    cells = [(t, q) for t in range(k) for q in range(k)]

    def pure(t, q):
        ordered = analysis.sorted_selection(p, ((t, q),), "confidence")
        shown, _, _ = analysis.page_of(ordered, 0)
        return to_json_plotly(prediction_items("/", run, shown))

    print(f"\nserver side, in process ({run.name}, {len(run.labels):,} images, {len(cells)} cells)")
    cold, warm = [], []
    for t, q in cells:
        analysis.sorted_selection.cache_clear()
        analysis.cell_index_of.cache_clear()
        cold.append(timed(pure, t, q))
    for _ in range(3):
        for t, q in cells:
            warm.append(timed(pure, t, q))
    show("pure path + gallery builder, cold caches", *zip(*cold))
    show("pure path + gallery builder, warm caches", *zip(*warm))

    client = app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()  # what the page builds its requests from
    http, responses = [], []

    def post(body):
        responses.append(client.post("/_dash-update-component", json=body))

    for rnd in range(3):
        if rnd == 0:
            analysis.sorted_selection.cache_clear()
        for t, q in cells:
            click = {"points": [{"x": names[q], "y": names[t], "pointNumber": [t, q]}]}
            body = callback_body(deps, "gallery.children", {
                "confusion-matrix.clickData": click, "run-select.value": run.name, "gallery-sort.value": "confidence",
                "gallery-prev.n_clicks": 0, "gallery-next.n_clicks": 0, "view-tabs.value": "errors",
                "gallery-page.data": 0}, "confusion-matrix.clickData")
            http.append(timed(post, body))
            assert responses[-1].status_code == 200, responses[-1].status_code
    r = responses[-1]
    show("POST /_dash-update-component (test client)", *zip(*http))
    cold, warm, http = ([w for w, _ in x] for x in (cold, warm, http))
    size = len(r.get_data())
    print(f"  gallery response size: {size / 1024:.1f} KiB (thumbnails by URL, no base64)")
    return {"pure_cold_p95_ms": pct(cold, 95), "pure_warm_p95_ms": pct(warm, 95), "http_p95_ms": pct(http, 95)}


def page_usable_after(driver, url: str, t0: float, timeout: float = 300) -> float:
    """Seconds from ``t0`` until the overview's metric cards and table are on screen."""
    from selenium.webdriver.common.by import By

    wait_for_server(url, t0, timeout)  # the browser would show an error page if it came first
    driver.get(url)
    while time.perf_counter() - t0 < timeout:
        cards = driver.find_elements(By.CSS_SELECTOR, "#overview-cards .metric")
        # the per-class table is an AG Grid: its rows are divs, drawn once its rowData arrived
        if cards and driver.find_elements(By.CSS_SELECTOR, "#class-table .ag-center-cols-container .ag-row"):
            return time.perf_counter() - t0
        time.sleep(0.02)
    raise TimeoutError("page never became usable")


def first_gradcam_after(driver, timeout: float = 60) -> float:
    """Seconds from opening the gallery tab to the first thumbnail's Grad-CAM being shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.perf_counter()
    driver.find_element(By.XPATH, TAB_XPATH.format("Confusion & gallery")).click()
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item"))[0].click()
    wait.until(lambda d: (d.find_elements(By.ID, "xp-detail-overlay") or [None])[0] is not None
               and (d.find_element(By.ID, "xp-detail-overlay").get_attribute("src") or "").startswith("data:image"))
    return time.perf_counter() - t0


STARTUPS = (  # (label, summary key, fresh analysis cache?, empty the browser's HTTP cache?)
    ("first launch: empty user cache + browser cache", "startup_first", True, True),
    ("relaunch, new browser (empty HTTP cache)", "startup_new_browser", False, True),
    ("relaunch, returning browser (cached JS)", "startup_warm", False, False),
)


def bench_startups(driver, run_dirs, data_dir, port: int, launches: int, caches: str) -> tuple[dict, subprocess.Popen]:
    """Launch -> page usable, ``launches`` times per :data:`STARTUPS` scenario, then the first Grad-CAM.
    Returns the figures and the last launch's server, still running (the caller stops it)."""
    import psutil

    url, out, proc = f"http://127.0.0.1:{port}/", {}, None
    try:
        print(f"\nstart-up: launch -> overview metrics visible in Chromium ({', '.join(d.name for d in run_dirs)}),"
              f" median of {launches}")
        for label, key, fresh, clear_browser in STARTUPS:
            walls, cpus = [], []
            for i in range(launches):
                # later launches reuse what the first launch of all left behind
                cache = os.path.join(caches, f"first-{i}" if fresh else "first-0")
                if proc is not None:
                    proc.terminate(); proc.wait(20)
                driver.get("about:blank")
                if clear_browser:  # what a user who never opened the dashboard downloads and parses
                    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
                t0 = time.perf_counter()
                proc = launch(run_dirs, data_dir, port, cache)
                walls.append(page_usable_after(driver, url, t0))
                # CPU seconds the server spent to get there: the wall time on an idle machine
                # is close to this, whatever else is competing for the cores now.
                cpu = psutil.Process(proc.pid).cpu_times()
                cpus.append(cpu.user + cpu.system)
            wall, cpu = float(np.median(walls)), float(np.median(cpus))
            print(f"  {label:<48} {wall:6.2f} s wall   {cpu:5.2f} s server CPU"
                  f"   (each: {', '.join(f'{w:.2f}' for w in walls)} s)")
            out[f"{key}_s"], out[f"{key}_cpu_s"] = wall, cpu
        out["first_gradcam_s"] = first_gradcam_after(driver)
        print(f"  first Grad-CAM, asked for the moment the page was usable (gallery tab, first\n"
              f"  thumbnail, overlay drawn; torch and the model load on first use): "
              f"{out['first_gradcam_s']:.2f} s")
        return out, proc
    except BaseException:
        if proc is not None:
            proc.terminate(); proc.wait(20)
        raise


def bench_clicks(driver, proc: subprocess.Popen, run_dirs, data_dir, port: int, clicks: int) -> dict:
    """Confusion-cell click -> every gallery thumbnail decoded, over ``clicks`` distinct cells, on the
    running server ``proc``; then its RSS."""
    import psutil
    from selenium.webdriver.common.by import By

    from xai_dashboard.store import RunStore

    driver.get("about:blank")
    driver.get_log("browser")  # drop start-up noise (requests cut off by the restart)
    store = RunStore.from_dirs(run_dirs, data_dir)  # same data as the server, to know the answers
    run = store.get(store.default)
    names, k = run.class_names, len(run.class_names)
    p = analysis.predictions_of(run)
    cm = analysis.confusion(run.labels, run.preds, k)
    cells = [(t, q) for t in range(k) for q in range(k) if t != q and cm[t, q] > 0]
    random.Random(0).shuffle(cells)
    page_usable_after(driver, f"http://127.0.0.1:{port}/", time.perf_counter())
    # Clicks measure the steady state: the page loads torch and the model in the
    # background once the overview is up (~2.5 s of CPU), and a click during that is slower.
    print(f"\n  (server idle {wait_until_idle(proc.pid):.1f} s after the page was usable)")
    driver.find_element(By.XPATH, TAB_XPATH.format("Confusion & gallery")).click()
    for _ in range(600):
        if driver.execute_script("const g=document.querySelector('#confusion-matrix .js-plotly-plot');"
                                 "return !!(g && g.data && g.data.length)"):
            break
        time.sleep(0.05)
    times, cpu0 = [], sum(psutil.Process(proc.pid).cpu_times()[:2])
    for t, q in cells[:clicks]:
        first = int(analysis.sorted_selection(p, ((t, q),), "confidence")[0])
        ms = driver.execute_async_script(CLICK_JS, names[q], names[t], t, q, first)
        if ms < 0:
            raise TimeoutError(f"gallery for cell {names[t]}->{names[q]} never appeared")
        times.append(ms / 1000.0)
    print(f"\nbrowser: click -> all gallery thumbnails decoded ({len(times)} distinct cells)")
    show("click to images visible", times)
    cpu = sum(psutil.Process(proc.pid).cpu_times()[:2]) - cpu0
    print(f"  server CPU per click (callback + 48 thumbnails): {cpu / len(times) * 1000:.1f} ms")
    logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    print(f"  browser console SEVERE entries: {len(logs)}")
    ps = psutil.Process(proc.pid)
    rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
    print(f"\nmemory: dashboard process RSS with {len(run_dirs)} runs loaded, after the clicks: "
          f"{rss / 2**20:,.0f} MiB")
    return {"browser_p95_ms": pct(times, 95), "rss_mib": rss / 2**20}


def bench_browser(run_dirs, data_dir, port: int, clicks: int, launches: int = 3) -> dict:
    with chromium(script_timeout=30) as driver, tempfile.TemporaryDirectory() as caches:
        out, proc = bench_startups(driver, run_dirs, data_dir, port, launches, caches)
        try:
            out.update(bench_clicks(driver, proc, run_dirs, data_dir, port, clicks))
        finally:
            proc.terminate()
            proc.wait(20)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="*", type=Path)
    ap.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--launches", type=int, default=3, help="launches per start-up scenario (median reported)")
    ap.add_argument("--no-browser", action="store_true", help="skip start-up, browser and RSS measurements")
    args = ap.parse_args(argv)
    run_dirs = args.run_dirs or default_runs()
    print(f"machine: {os.cpu_count()} CPU cores, load average {load_average()} "
          "(timings scale with contention; the CPU-second figures do not)")
    results = bench_in_process(run_dirs, args.data_dir)
    if not args.no_browser:
        results.update(bench_browser(run_dirs, args.data_dir, args.port, args.clicks, args.launches))
    print("\nsummary " + json.dumps({k: round(v, 2) for k, v in results.items()}))
    print("targets: gallery callback p95 <= 50 ms; click-to-images p95 <= 300 ms; RSS <= 1536 MiB; page usable <= 3 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
