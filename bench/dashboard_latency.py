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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.rundir import RunDirError, find_runs, load_run  # noqa: E402
from xai_dashboard import analysis  # noqa: E402

TAB_XPATH = "//*[contains(@class,'tab') and normalize-space()='{}']"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--window-size=1400,1600")

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


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def show(label: str, seconds: list[float], cpu: list[float] | None = None) -> None:
    line = (f"  {label:<44} n={len(seconds):>3}  p50 {pct(seconds, 50):7.1f} ms   p95 {pct(seconds, 95):7.1f} ms"
            f"   max {pct(seconds, 100):7.1f} ms")
    if cpu is not None:  # CPU time of the serving thread: what the wall time is on an uncontended core
        line += f"   | CPU p50 {pct(cpu, 50):5.1f} ms  p95 {pct(cpu, 95):5.1f} ms"
    print(line)


def timed(fn, *args):
    """``(wall seconds, this thread's CPU seconds)`` of ``fn(*args)``."""
    w, c = time.perf_counter(), time.thread_time()
    fn(*args)
    return time.perf_counter() - w, time.thread_time() - c


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


def gallery_payload(app, click: dict, run: str) -> dict:
    """The body the browser POSTs to /_dash-update-component for a heatmap click."""
    key = next(k for k in app.callback_map if "gallery.children" in k)
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in key.strip(".").split("...")]
    return {
        "output": key, "outputs": outputs, "changedPropIds": ["confusion-matrix.clickData"],
        "inputs": [{"id": "confusion-matrix", "property": "clickData", "value": click}, [],
                   {"id": "run-select", "property": "value", "value": run},
                   {"id": "gallery-sort", "property": "value", "value": "confidence"},
                   {"id": "gallery-prev", "property": "n_clicks", "value": 0},
                   {"id": "gallery-next", "property": "n_clicks", "value": 0},
                   {"id": "view-tabs", "property": "value", "value": "errors"}],
        "state": [{"id": "gallery-selection", "property": "data", "value": None},
                  {"id": "gallery-page", "property": "data", "value": 0}],
    }


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
    http, responses = [], []

    def post(body):
        responses.append(client.post("/_dash-update-component", json=body))

    for rnd in range(3):
        if rnd == 0:
            analysis.sorted_selection.cache_clear()
        for t, q in cells:
            body = gallery_payload(app, {"points": [{"x": names[q], "y": names[t], "pointNumber": [t, q]}]}, run.name)
            http.append(timed(post, body))
            assert responses[-1].status_code == 200, responses[-1].status_code
    r = responses[-1]
    show("POST /_dash-update-component (test client)", *zip(*http))
    cold, warm, http = ([w for w, _ in x] for x in (cold, warm, http))
    size = len(r.get_data())
    print(f"  gallery response size: {size / 1024:.1f} KiB (thumbnails by URL, no base64)")
    return {"pure_cold_p95_ms": pct(cold, 95), "pure_warm_p95_ms": pct(warm, 95), "http_p95_ms": pct(http, 95)}


def launch(run_dirs, data_dir, port, cache_dir) -> subprocess.Popen:
    env = dict(os.environ, XAI_CACHE_DIR=cache_dir)
    if data_dir:
        env["XAI_DATA_DIR"] = data_dir
    cmd = [str(ROOT / ".venv" / "bin" / "xai-dashboard"), *map(str, run_dirs), "--port", str(port)]
    if not Path(cmd[0]).exists():
        cmd = [sys.executable, "-m", "xai_dashboard.cli", *cmd[1:]]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def page_usable_after(driver, url: str, t0: float, timeout: float = 300) -> float:
    """Seconds from ``t0`` until the overview's metric cards and table are on screen."""
    import urllib.request

    from selenium.webdriver.common.by import By

    while True:  # the browser would show an error page if it came first, so wait for the socket
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("server never answered") from None
            time.sleep(0.05)
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


def wait_until_idle(pid: int, timeout: float = 60.0) -> float:
    """Seconds until process ``pid`` has used < 2% of a core over 1 s, e.g. after the
    background model load that follows the first page."""
    import psutil

    proc, t0 = psutil.Process(pid), time.perf_counter()
    last = sum(proc.cpu_times()[:2])
    while time.perf_counter() - t0 < timeout:
        time.sleep(1.0)
        now = sum(proc.cpu_times()[:2])
        if now - last < 0.02:
            break
        last = now
    return time.perf_counter() - t0


def bench_browser(run_dirs, data_dir, port: int, clicks: int, launches: int = 3) -> dict:
    import psutil
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    from xai_dashboard.store import RunStore

    options = webdriver.ChromeOptions()
    if Path("/usr/bin/chromium").exists():
        options.binary_location = "/usr/bin/chromium"
    for a in CHROME_ARGS:
        options.add_argument(a)
    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + "/usr/bin"
    driver = webdriver.Chrome(options=options)
    driver.set_script_timeout(30)
    url = f"http://127.0.0.1:{port}/"
    out, proc = {}, None
    scenarios = (  # (label, summary key, fresh analysis cache?, empty the browser's HTTP cache?)
        ("first launch: empty user cache + browser cache", "startup_first", True, True),
        ("relaunch, new browser (empty HTTP cache)", "startup_new_browser", False, True),
        ("relaunch, returning browser (cached JS)", "startup_warm", False, False),
    )
    with tempfile.TemporaryDirectory() as caches:
        try:
            print(f"\nstart-up: launch -> overview metrics visible in Chromium ({', '.join(d.name for d in run_dirs)}),"
                  f" median of {launches}")
            for label, key, fresh, clear_browser in scenarios:
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
            driver.get("about:blank")
            driver.get_log("browser")  # drop start-up noise (requests cut off by the restart)
            store = RunStore.from_dirs(run_dirs, data_dir)  # same data as the server, to know the answers
            run = store.get(store.default)
            names, k = run.class_names, len(run.class_names)
            p = analysis.predictions_of(run)
            cm = analysis.confusion(run.labels, run.preds, k)
            cells = [(t, q) for t in range(k) for q in range(k) if t != q and cm[t, q] > 0]
            random.Random(0).shuffle(cells)
            page_usable_after(driver, url, time.perf_counter())
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
            out["browser_p95_ms"] = pct(times, 95)
            logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            print(f"  browser console SEVERE entries: {len(logs)}")
            ps = psutil.Process(proc.pid)
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            print(f"\nmemory: dashboard process RSS with {len(run_dirs)} runs loaded, after the clicks: "
                  f"{rss / 2**20:,.0f} MiB")
            out["rss_mib"] = rss / 2**20
        finally:
            if proc is not None:
                proc.terminate(); proc.wait(20)
            driver.quit()
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
    print(f"machine: {os.cpu_count()} CPU cores, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
          "(timings scale with contention; the CPU-second figures do not)")
    results = bench_in_process(run_dirs, args.data_dir)
    if not args.no_browser:
        results.update(bench_browser(run_dirs, args.data_dir, args.port, args.clicks, args.launches))
    print("\nsummary " + json.dumps({k: round(v, 2) for k, v in results.items()}))
    print("targets: gallery callback p95 <= 50 ms; click-to-images p95 <= 300 ms; RSS <= 1536 MiB; page usable <= 3 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
