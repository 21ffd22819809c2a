"""The embedding map and the humans-vs-model scatter in the browser: how fast, and which plotly.js to send.

1. Bundles (a static page, no app): for each plotly.js bundle, its size, the time from navigation to the
   bundle evaluated, and to the run's 10,000-point map figure drawn by ``Plotly.newPlot``, served under the
   app's Content-Security-Policy (``script-src 'self'``), with how it was drawn: WebGL, SVG, or not at
   all ("WebGL is not supported": regl's ``new Function`` refused by the policy).
2. The app (a live ``xai-dashboard`` server, cifar10-fast by default): a fresh page per repetition, then
   tab click -> every map point drawn (first open, and back on the tab), a selection emitted as plotly
   emits a lasso's -> the gallery's thumbnails all decoded (each time other images, so none is cached),
   the humans tab -> its 10,000-point scatter drawn, a slice button -> its gallery decoded.

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/map_latency.py [RUN_DIR] [--repeats 10]
        [--bundle NAME=PATH ...]

Median and p95 (ms) over the repetitions; on a shared machine the figures are "loaded".
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np

from common import ROOT, TAB_XPATH, chromium, dashboard, open_page, page_shows, show, wait_for_server

CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:"
# The static page's own script (a file: the policy refuses inline scripts): draw the figure, report.
DRAW_PAGE_JS = """
const loaded = performance.now();  // since navigation: this script runs right after the bundle
fetch('figure.json').then(r => r.json()).then(fig => {
  const gd = document.getElementById('gd');
  return Plotly.newPlot(gd, fig.data, fig.layout).then(() => requestAnimationFrame(() => {
    const how = gd.querySelector('.no-webgl') ? 'not drawn (no WebGL)'
      : gd.querySelector('canvas.gl-canvas-context') ? 'WebGL'
      : gd.querySelectorAll('.scatterlayer .point').length ? 'SVG' : 'nothing';
    window.benchResult = {evaluated: loaded, drawn: performance.now(), how: how};
  }));
}).catch(e => { window.benchResult = {evaluated: loaded, drawn: -1, how: 'error: ' + e}; });
"""
# The page's requests since ``t0``: how many callbacks it posted and when the last answer (or image) was in.
REQUESTS_JS = """
performance.setResourceTimingBufferSize(100000);  // the default 250 entries fill up within a page or two
function requestsSince(t0) {
  const all = performance.getEntriesByType('resource').filter(e => e.startTime >= t0);
  const calls = all.filter(e => e.name.includes('_dash-update-component'));
  const images = all.filter(e => e.initiatorType === 'img');
  const last = es => es.length ? Math.max(...es.map(e => e.responseEnd)) - t0 : 0;
  return {calls: calls.length, answered: last(calls), images: images.length, imagesIn: last(images)};
}
"""
# In the app: click a tab, resolve when the graph holds ``n`` points and has drawn them (gl canvas or SVG).
TAB_DRAW_JS = REQUESTS_JS + """
const [title, graph, n, done] = arguments;
const tab = Array.from(document.querySelectorAll('.tab')).find(e => e.textContent.trim() === title);
const t0 = performance.now();
tab.click();
(function poll() {
  const gd = document.querySelector(graph + ' .js-plotly-plot');
  const count = gd && gd._fullData ? gd._fullData.reduce((s, t) => s + (t._length || 0), 0) : 0;
  const gl = gd && gd.querySelector('canvas.gl-canvas-context');
  const svg = gd ? gd.querySelectorAll('.scatterlayer .point').length : 0;
  if (count >= n && (gl || svg >= n)) {
    return requestAnimationFrame(() => done([performance.now() - t0, gl ? 'WebGL' : 'SVG', requestsSince(t0)]));
  }
  if (performance.now() - t0 > 30000) return done([-1, 'timeout', requestsSince(t0)]);
  requestAnimationFrame(poll);
})();
"""
# Resolve when every thumbnail of ``gallery`` is decoded and the first one is test image ``first``; the
# requests' summary gets ``shown``: when the items were on the page (the thumbnails still loading).
GALLERY_READY_JS = REQUESTS_JS + """
function galleryState(gallery, first) {
  const items = document.querySelectorAll(gallery + ' .gallery-item');
  if (!items.length || items[0].getAttribute('data-index') !== String(first)) return 0;
  return Array.from(document.querySelectorAll(gallery + ' img')).every(i => i.complete && i.naturalWidth > 0) ? 2 : 1;
}
function pollUntil(state, t1, done) {
  let shown = -1;
  (function poll() {
    const now = performance.now() - t1, s = state();
    if (s >= 1 && shown < 0) shown = now;
    if (s === 2) return done([now, {...requestsSince(t1), shown: shown}]);
    if (now > 30000) return done([-1, {...requestsSince(t1), shown: shown}]);
    requestAnimationFrame(poll);
  })();
}
"""
# Select the points whose test indices are ``ids`` (as a lasso reports them), after clearing the gallery.
SELECT_JS = GALLERY_READY_JS + """
const [ids, done] = arguments;
const gd = document.querySelector('#emb-map .js-plotly-plot'), want = new Set(ids), pts = [];
gd.data.forEach((t, c) => t.customdata.forEach((i, j) => { if (want.has(i)) pts.push(
    {curveNumber: c, pointNumber: j, pointIndex: j}); }));
gd.emit('plotly_deselect', null);
const t0 = performance.now();
(function cleared() {
  if (document.querySelector('#emb-gallery .gallery-item') && performance.now() - t0 < 20000)
    return requestAnimationFrame(cleared);
  const t1 = performance.now();
  gd.emit('plotly_selected', {points: pts});
  pollUntil(() => galleryState('#emb-gallery', Math.min(...ids)), t1, done);
})();
"""
SLICE_JS = GALLERY_READY_JS + """
const [title, first, done] = arguments, t0 = performance.now();
(function find() {  // the buttons come with the figures, but may be rendered a frame later
  const button = Array.from(document.querySelectorAll('#hv-slices button')).find(b => b.textContent.startsWith(title));
  if (!button) return performance.now() - t0 < 30000 ? requestAnimationFrame(find) : done([-1, requestsSince(t0)]);
  const t1 = performance.now();
  button.click();
  pollUntil(() => galleryState('#hv-gallery', first), t1, done);
})();
"""


def _ms(values) -> list[float]:
    return [v / 1000 for v in values]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-cache")  # revalidated (304), as Dash's assets are
        super().end_headers()

    def log_message(self, *args):
        pass


def bench_bundles(driver, bundles: dict[str, Path], figure_json: str, repeats: int) -> None:
    """Section 1: each bundle on a static page (same policy as the app), ``repeats`` fresh navigations."""
    with tempfile.TemporaryDirectory() as d:
        site = Path(d)
        (site / "figure.json").write_text(figure_json)
        (site / "draw.js").write_text(DRAW_PAGE_JS)
        for name, path in bundles.items():
            (site / f"{name}.js").symlink_to(path.resolve())
            (site / f"{name}.html").write_text(
                f'<!doctype html><html><body><div id="gd" style="width:900px;height:560px"></div>'
                f'<script src="{name}.js"></script><script src="draw.js"></script></body></html>')
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        print(f"\nplotly.js bundles, static page under the app's CSP, {len(json.loads(figure_json)['data'])} traces:")
        try:
            for name, path in bundles.items():
                results = []
                for _ in range(repeats + 1):  # the first load fills the HTTP and V8 caches: reported apart
                    driver.get(f"http://127.0.0.1:{port}/{name}.html")
                    deadline = time.perf_counter() + 60
                    while (r := driver.execute_script("return window.benchResult")) is None:
                        if time.perf_counter() > deadline:
                            raise TimeoutError(f"{name} never drew")
                        time.sleep(0.02)
                    results.append(r)
                first, rest = results[0], results[1:]
                print(f"  {name}: {path.stat().st_size / 2**20:.2f} MiB, drawn as {first['how']}; first load: "
                      f"evaluated {first['evaluated']:.0f} ms, drawn {first['drawn']:.0f} ms")
                show(f"{name}: navigation -> bundle evaluated", _ms(r["evaluated"] for r in rest))
                show(f"{name}: navigation -> 10k points drawn", _ms(r["drawn"] for r in rest))
        finally:
            server.shutdown()


def _report(label: str, results: list) -> None:
    """p50/p95 of ``results`` (``[ms, {calls, answered, images, imagesIn[, shown]}]`` each) and, on a second
    line, the medians of where the time went: callbacks posted, the last answer in, the gallery's items on
    the page, the last thumbnail in."""
    show(label, _ms(r[0] for r in results))
    med = {k: float(np.median([r[1][k] for r in results])) for k in results[0][1]}
    print(f"    {med['calls']:.0f} callback requests, last answered at {med['answered']:.0f} ms"
          + (f"; gallery items shown at {med['shown']:.0f} ms" if "shown" in med else "")
          + (f"; {med['images']:.0f} thumbnails, last in at {med['imagesIn']:.0f} ms" if med["images"] else ""))


def bench_app(driver, run_dir: Path, data_dir: str | None, port: int, repeats: int) -> None:
    """Section 2: the live app, one fresh page per repetition."""
    from selenium.webdriver.common.by import By

    from xai_dashboard.human_analysis import compare
    from xai_dashboard.human_labels import human_probs
    from xai_dashboard.store import RunStore

    run = RunStore.from_dirs([run_dir], data_dir).get(None)
    n = len(run.labels)
    human = human_probs(run, data_dir)
    slices = compare(run.labels, run.probs, human).slices if human is not None else None
    rng = np.random.default_rng(0)
    url = f"http://127.0.0.1:{port}/"
    labels = ["tab click -> map drawn (first open)", "tab click -> map drawn (back on the tab)",
              "500-point selection -> 48 thumbnails decoded", f"{n:,}-point selection -> gallery (cached)",
              "humans tab -> 10k scatter drawn", "slice button -> gallery decoded"]
    results = {label: [] for label in labels}
    with dashboard([run_dir], data_dir, port):
        wait_for_server(url)
        for r in range(repeats + 1):  # the first page pays the server's one-off loads: not counted
            open_page(driver, url, page_shows(css="#overview-cards .metric"), wait=120, settle=0.5)
            got = [driver.execute_async_script(TAB_DRAW_JS, "Embedding map", "#emb-map", n)]
            driver.find_element(By.XPATH, TAB_XPATH.format("Overview")).click()
            time.sleep(1.0)
            got.append(driver.execute_async_script(TAB_DRAW_JS, "Embedding map", "#emb-map", n))
            how = got[0][1]
            got = [[g[0], g[2]] for g in got]
            ids = rng.choice(n, 500, replace=False).tolist()  # other images every time: none cached
            got.append(driver.execute_async_script(SELECT_JS, ids))
            got.append(driver.execute_async_script(SELECT_JS, list(range(n))))
            if slices is not None:
                s = driver.execute_async_script(TAB_DRAW_JS, "Humans vs model", "#hv-scatter", n)
                key = ("confident_split", "both_unsure")[r % 2]  # alternate: thumbnails not all cached
                title = {"confident_split": "Model confident", "both_unsure": "Both unsure"}[key]
                got += [[s[0], s[2]], driver.execute_async_script(SLICE_JS, title, int(slices[key][0]))]
            if r == 0:
                print(f"\nthe app ({run.name}, {n:,} points, map drawn as {how}; first page, not counted: "
                      f"map {got[0][0]:.0f} ms)")
                continue
            for label, result in zip(labels, got):
                results[label].append(result)
    for label in labels:
        if results[label]:
            _report(label, results[label])
    if slices is None:
        print("  no annotator file for this run: humans view not measured")


def main(argv=None) -> int:
    from xai_dashboard import vendor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path, default=ROOT / "checkpoints" / "cifar10-fast")
    ap.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    ap.add_argument("--port", type=int, default=8771)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH",
                    help="another plotly.js bundle to compare (e.g. an older cartesian one)")
    ap.add_argument("--no-app", action="store_true", help="only the bundle comparison")
    args = ap.parse_args(argv)

    from dash._utils import to_json
    from plotly.offline import get_plotlyjs_version

    from xai_dashboard.embedding_space import map_coordinates
    from xai_dashboard.store import RunStore
    from xai_dashboard.views import embedding_map as em

    import plotly

    # the vendored strict bundle (xai_dashboard.vendor) and the full one Dash would send without it
    bundles = {"strict": vendor.bundle_path(), "full": Path(plotly.__file__).parent / "package_data" / "plotly.min.js"}
    bundles.update({name: Path(path) for name, path in (b.split("=", 1) for b in args.bundle)})
    bundles = {name: path for name, path in bundles.items() if path.is_file()}
    run = RunStore.from_dirs([args.run_dir], args.data_dir).get(None)
    xy, _ = map_coordinates(run, "umap")
    figure_json = to_json(em.map_figure(xy if xy is not None else map_coordinates(run, "pca")[0], "true",
                                        run.labels, run.class_names))
    print(f"plotly.js {get_plotlyjs_version()}; map figure JSON for {len(run.labels):,} points: "
          f"{len(figure_json) / 1024:.0f} KiB")
    with chromium(script_timeout=90) as driver:
        bench_bundles(driver, bundles, figure_json, args.repeats)
        if not args.no_app:
            bench_app(driver, args.run_dir, args.data_dir, args.port, args.repeats)
    print(f"\n(p50/p95 in ms; load average when done: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
