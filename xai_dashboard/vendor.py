"""plotly.js for the browser: the official "strict" bundle, fetched at setup, instead of Dash's.

The app sends a Content-Security-Policy without ``'unsafe-eval'`` (:func:`.app.add_security_headers`).
The WebGL traces (``scattergl``: the embedding map's and the humans view's 10,000 points) draw through
regl, which in Dash's full plotly.js compiles its draw calls with ``new Function``: the policy blocks
that, and plotly shows "WebGL is not supported" instead of the points. plotly.js's strict bundle
ships those draw calls precompiled (plotly.js 2.11.1+), so it is the one bundle that draws scattergl
under our policy. (The "cartesian" partial bundle vendored before has no scattergl: plotly quietly
drew the 10,000 points as 10,000 SVG paths.)

What it costs (``bench/map_latency.py``, headless Chromium on a loaded 2-core machine): 5.2 MB against
the cartesian bundle's 1.5 MB, so a browser's very first page load evaluates it in ~2 s instead of
~0.5 s; from then on Chrome reuses the compiled code (~0.15 s against ~0.1 s). Drawing the 10,000-point
map on a bare page took 0.5-0.7 s (p50) against the SVG fallback's 0.6-1.0 s. A once-per-browser cost
buys every later draw and interaction; a bundle of exactly our traces would be smaller, but needs
plotly.js's own build tool chain (node) at setup.

``make setup`` runs ``python -m xai_dashboard.vendor``: it downloads the bundle of the plotly.js
version the installed plotly package targets from the npm registry, checks the registry's sha512,
and stores it with its licence in ``xai_dashboard/assets/vendor/`` (not in git). Dash adds every
script in its assets folder to the page, and dcc.Graph uses ``window.Plotly`` when a page script has
defined it, so Dash's own bundle is then never requested. Without the file (an offline setup) Dash's
full bundle is used: every chart but the two WebGL scatters draws.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
VENDOR = ASSETS / "vendor"
PACKAGE = "plotly.js-strict-dist-min"
REGISTRY = "https://registry.npmjs.org"
PREFIX = "plotly-strict-"
BUNDLES = "plotly-"  # any vendored plotly.js bundle, this one or one a setup of an older version left


def plotlyjs_version() -> str:
    """The plotly.js version the installed plotly (Python) package was built against."""
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def bundle_path(version: str | None = None) -> Path:
    return VENDOR / f"{PREFIX}{version or plotlyjs_version()}.min.js"


def assets_ignore(version: str | None = None) -> str:
    """Regex for ``dash.Dash(assets_ignore=...)``: every other vendored plotly.js, of another version
    (which could not draw every figure the installed plotly produces) or another bundle (an older
    setup's "cartesian" one): Dash would add each to the page, to be parsed and then replaced."""
    return rf"^(?!{re.escape(bundle_path(version).name)}$){re.escape(BUNDLES)}"


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _check_integrity(data: bytes, integrity: str) -> None:
    """npm's Subresource-Integrity string, ``sha512-<base64>``."""
    algo, _, want = integrity.partition("-")
    if algo != "sha512":
        raise ValueError(f"unexpected integrity algorithm {algo!r}")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != want:
        raise ValueError(f"sha512 mismatch for the downloaded {PACKAGE} tarball")


def fetch(version: str | None = None, registry: str = REGISTRY, timeout: float = 60.0) -> Path:
    """Download, verify and store the strict bundle; returns its path (already there: no download)."""
    version = version or plotlyjs_version()
    target = bundle_path(version)
    if target.is_file():
        return target
    meta = json.loads(_get(f"{registry}/{PACKAGE}/{version}", timeout))
    tarball = _get(meta["dist"]["tarball"], timeout)
    _check_integrity(tarball, meta["dist"]["integrity"])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        script = tar.extractfile("package/plotly-strict.min.js").read()
        licence = tar.extractfile("package/LICENSE").read()
    VENDOR.mkdir(parents=True, exist_ok=True)
    for old in VENDOR.glob(f"{BUNDLES}*"):
        old.unlink()
    (VENDOR / f"{PREFIX}{version}.LICENSE.txt").write_bytes(licence)
    partial = target.with_suffix(".part")
    partial.write_bytes(script)
    partial.replace(target)  # atomic: the app never serves half a file
    return target


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m xai_dashboard.vendor", description=__doc__.splitlines()[0])
    p.add_argument("--registry", default=REGISTRY, help="npm registry or mirror (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        path = fetch(registry=args.registry.rstrip("/"), timeout=args.timeout)
    except Exception as e:  # offline, registry down, unexpected layout: Dash's bundle is used
        print(f"xai-dashboard: note: the plotly.js strict bundle could not be fetched ({type(e).__name__}: "
              f"{e}); the dashboard will use Dash's full plotly.js, whose WebGL scatters (the embedding map, "
              f"humans vs model) our Content-Security-Policy blocks.",
              file=sys.stderr)
        return 0
    print(f"xai-dashboard: plotly.js strict bundle: {path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
