"""Nearest training examples and the embedding map: how fast, on a CIFAR-10 run (default cifar10-fast).

1. in process: loading the training index (embeddings.npz -> unit-length float32), one nearest-neighbour
   query against the 50,000 training embeddings (test image; upload = embed + search), p50/p95;
2. in process: the map's figure for 10,000 points (build + JSON), each colouring; the PCA computed
   on demand (before embedding_map.npz exists);
3. in headless Chromium against a live server: tab click -> every point drawn, and a lasso selection
   (emitted as plotly emits it) -> the gallery's thumbnails all decoded.

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/neighbours_speed.py [RUN_DIR] [--no-browser]

The run needs ``xai-dashboard precompute embeddings RUN`` first.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path

import numpy as np

from common import ROOT, TAB_XPATH, chromium, dashboard, open_page, page_shows, show, timed

# Runs in the page: select the first ``k`` points of every trace in turn (as a lasso would report them),
# then resolve once the gallery shows the selection's first image with every thumbnail decoded.
SELECT_JS = """
const [k, done] = arguments;
const gd = document.querySelector('#emb-map .js-plotly-plot');
const pts = [], ids = [];
gd.data.forEach((t, c) => t.customdata.forEach((i, j) => { if (ids.length < k) { pts.push(
    {curveNumber: c, pointNumber: j, pointIndex: j}); ids.push(i); } }));
const first = String(Math.min(...ids));
gd.emit('plotly_deselect', null);  // start from an empty gallery, so the same selection twice is timed twice
const t0 = performance.now();
const clear = () => !document.querySelector('#emb-gallery .gallery-item');
(function wait() { if (!clear() && performance.now() - t0 < 20000) return requestAnimationFrame(wait); start(); })();
function start() {
const t1 = performance.now();
gd.emit('plotly_selected', {points: pts});
function ready() {
  const items = document.querySelectorAll('#emb-gallery .gallery-item');
  if (!items.length || items[0].getAttribute('data-index') !== first) return false;
  return Array.from(document.querySelectorAll('#emb-gallery img')).every(i => i.complete && i.naturalWidth > 0);
}
(function poll() {
  if (ready()) return done(performance.now() - t1);
  if (performance.now() - t1 > 20000) return done(-1);
  requestAnimationFrame(poll);
})();
}
"""
# Tab click -> every point drawn: WebGL canvases (full plotly.js), or one SVG path per point where the page
# runs the vendored "cartesian" bundle (xai_dashboard.vendor), which has no scattergl and draws it as scatter.
DRAW_JS = """
const [n, done] = arguments;
const tab = Array.from(document.querySelectorAll('.tab')).find(e => e.textContent.trim() === 'Embedding map');
const t0 = performance.now();
tab.click();
(function poll() {
  const gd = document.querySelector('#emb-map .js-plotly-plot');
  const count = gd && gd.data ? gd.data.reduce((s, t) => s + (t.customdata ? t.customdata.length : 0), 0) : 0;
  const drawn = gd && (gd.querySelector('canvas.gl-canvas-context')
                       || gd.querySelectorAll('.scatterlayer .point').length >= n);
  if (count === n && drawn) return done([performance.now() - t0, gd._fullData[0].type]);
  if (performance.now() - t0 > 30000) return done(-1);
  requestAnimationFrame(poll);
})();
"""


# CPU seconds of this process, all threads: the search and the embedding use BLAS and torch threads; on a
# loaded machine the CPU time is what the wall time would be on free cores
timed_all = partial(timed, clock=time.process_time)


def bench_in_process(run_dir: Path, data_dir: str | None) -> None:
    from dash._utils import to_json

    from xai_dashboard import embedding_space as es
    from xai_dashboard.store import RunStore
    from xai_dashboard.views import embedding_map as em

    run = RunStore.from_dirs([run_dir], data_dir).get(None)
    t0 = time.perf_counter()
    index, note = es.train_index(run)
    if index is None:
        raise SystemExit(note)
    print(f"\n{run.name}: {index.unit.shape[0]:,} training embeddings of {index.unit.shape[1]} dims")
    print(f"  first query's index load (embeddings.npz -> unit float32): {time.perf_counter() - t0:.2f} s")
    queries = np.random.default_rng(0).choice(len(run.labels), 300, replace=False)
    show("nearest 8 of a test image (search only)",
         *zip(*[timed_all(lambda i=i: es.neighbours_of(run, test_index=int(i), k=8)) for i in queries]))
    es.neighbours_of(run, image=run.images[0])  # loads torch and the model
    show("nearest 8 of an upload (embed + search)",
         *zip(*[timed_all(lambda i=i: es.neighbours_of(run, image=run.images[int(i)], k=8)) for i in queries[:60]]))

    es._stored_pca.cache_clear()
    t = time.perf_counter()
    es._stored_pca(run)
    print(f"  PCA on demand (no embedding_map.npz; scikit-learn, incl. import): {time.perf_counter() - t:.2f} s")
    xy, _ = es.map_coordinates(run, "umap")
    for by in ("true", "correct", "confidence"):
        values, _ = em.colour_values(run, by)
        size = len(to_json(em.map_figure(xy, by, values, run.class_names)))
        show(f"map figure, {len(xy):,} points, colour {by} (build + JSON)",
             *zip(*[timed_all(lambda: to_json(em.map_figure(xy, by, values, run.class_names))) for _ in range(10)]))
        print(f"    figure JSON {size / 1024:.0f} KiB")


def bench_browser(run_dir: Path, data_dir: str | None, port: int, repeats: int) -> None:
    from selenium.webdriver.common.by import By

    from trainer.rundir import load_run

    n = load_run(run_dir).meta["dataset"]["num_test"]
    with chromium(script_timeout=60) as driver, dashboard([run_dir], data_dir, port):
        open_page(driver, f"http://127.0.0.1:{port}/", page_shows(tab="Embedding map"), wait=15,
                  settle=2)  # let the first tab's callbacks finish
        draws = []
        for _ in range(repeats):  # the first open pays the map file read; later ones the figure only
            draws.append(driver.execute_async_script(DRAW_JS, n))
            driver.find_element(By.XPATH, TAB_XPATH.format("Overview")).click()
            time.sleep(0.5)
        print(f"\nin Chromium ({run_dir.name}, {n:,} points, drawn as {draws[0][1]})")
        print(f"  tab click -> map drawn: first {draws[0][0]:.0f} ms; then "
              f"{', '.join(f'{d[0]:.0f}' for d in draws[1:])} ms")
        driver.execute_async_script(DRAW_JS, n)
        for k in (50, 1000, n):
            times = [driver.execute_async_script(SELECT_JS, k) / 1000 for _ in range(repeats)]
            show(f"selection of {k:,} points -> gallery decoded", times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path, default=ROOT / "checkpoints" / "cifar10-fast")
    ap.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    ap.add_argument("--port", type=int, default=8767)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args(argv)
    bench_in_process(args.run_dir, args.data_dir)
    if not args.no_browser:
        bench_browser(args.run_dir, args.data_dir, args.port, args.repeats)
    print(f"\n(p50/p95 in ms; machine load when measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
