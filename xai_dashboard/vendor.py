"""A smaller plotly.js for the browser: the official "cartesian" partial bundle, fetched at setup.

Dash serves the full plotly.js (4.8 MB); a browser that has not cached it spends ~1 s
of main-thread time evaluating it before the first chart (and the page around it)
appears. Every chart here is a bar, scatter, heatmap or image trace, all of which
are in plotly.js's cartesian bundle (1.5 MB, about a third of that time).

``make setup`` runs ``python -m xai_dashboard.vendor``: it downloads the bundle of
the plotly.js version the installed plotly package targets from the npm registry,
checks the registry's sha512, and stores it with its licence in
``xai_dashboard/assets/vendor/`` (not in git). Dash adds every script in its assets
folder to the page, and dcc.Graph uses ``window.Plotly`` when a page script has
defined it, so Dash's own bundle is then never requested. Without the file (an
offline setup) nothing changes: the full bundle is used.
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
PACKAGE = "plotly.js-cartesian-dist-min"
REGISTRY = "https://registry.npmjs.org"
PREFIX = "plotly-cartesian-"


def plotlyjs_version() -> str:
    """The plotly.js version the installed plotly (Python) package was built against."""
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def bundle_path(version: str | None = None) -> Path:
    return VENDOR / f"{PREFIX}{version or plotlyjs_version()}.min.js"


def assets_ignore(version: str | None = None) -> str:
    """Regex for ``dash.Dash(assets_ignore=...)``: bundles of any other plotly.js version, which
    could not draw every figure the installed plotly produces."""
    return rf"^{re.escape(PREFIX)}(?!{re.escape(version or plotlyjs_version())}\.min\.js$)"


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
    """Download, verify and store the cartesian bundle; returns its path (already there: no download)."""
    version = version or plotlyjs_version()
    target = bundle_path(version)
    if target.is_file():
        return target
    meta = json.loads(_get(f"{registry}/{PACKAGE}/{version}", timeout))
    tarball = _get(meta["dist"]["tarball"], timeout)
    _check_integrity(tarball, meta["dist"]["integrity"])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        script = tar.extractfile("package/plotly-cartesian.min.js").read()
        licence = tar.extractfile("package/LICENSE").read()
    VENDOR.mkdir(parents=True, exist_ok=True)
    for old in VENDOR.glob(f"{PREFIX}*"):
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
    except Exception as e:  # offline, registry down, unexpected layout: all only cost speed
        print(f"xai-dashboard: note: the plotly.js cartesian bundle could not be fetched ({type(e).__name__}: "
              f"{e}); the dashboard will use Dash's full plotly.js, which only makes a first page load slower.",
              file=sys.stderr)
        return 0
    print(f"xai-dashboard: plotly.js cartesian bundle: {path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
