"""Two commands::

    xai-dashboard [RUN_DIR ...] [--data-dir DIR] [--host 127.0.0.1] [--port 8050]     serve the dashboard
    xai-dashboard precompute gradcam RUN [RUN ...] [--data-dir DIR] [--batch-size N] write RUN/gradcam.npz

A first argument naming a subcommand selects it, so a run directory that happens to be
called ``precompute`` is given as ``./precompute``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xai-dashboard",
        description="Error-analysis and explanation dashboard for the run directories written by xai-train. "
                    "`xai-dashboard precompute gradcam RUN ...` precomputes Grad-CAM for whole test sets.",
        epilog="Production: XAI_RUNS=run1:run2 XAI_DATA_DIR=DIR gunicorn -w 4 --preload xai_dashboard.wsgi:server",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run directories to open (default: every run under checkpoints/)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with cifar10_train.npz / cifar10_test.npz (default: $XAI_DATA_DIR, "
                        "else torchvision's download cache)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8050, help="port (default: %(default)s)")
    p.add_argument("--debug", action="store_true",
                   help="Dash debug mode with its dev tools (never in production)")
    return p


def build_precompute_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xai-dashboard precompute",
                                description="Compute derived files of run directories ahead of serving them.")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    g = what.add_parser("gradcam", help="Grad-CAM of every test image (predicted and true class) -> RUN/gradcam.npz")
    g.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories")
    g.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's npz files (default: $XAI_DATA_DIR)")
    g.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per pass (default: %(default)s)")
    return p


def precompute(argv: list[str]) -> int:
    """``xai-dashboard precompute gradcam RUN ...``: one tqdm bar per run; 1 if any run failed."""
    from pathlib import Path

    from tqdm import tqdm

    from trainer.rundir import RunDirError

    args = build_precompute_parser().parse_args(argv)
    from .precompute import precompute_gradcam  # after argparse: --help answers without torch

    failed = 0
    for run_dir in args.run_dirs:
        with tqdm(desc=Path(run_dir).resolve().name, unit="map", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)
            try:
                path = precompute_gradcam(run_dir, args.data_dir, args.batch_size, progress=progress)
            except (RunDirError, OSError, ValueError) as e:
                failed += 1
                bar.write(f"xai-dashboard precompute: {run_dir}: {e}")
                continue
        print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


SUBCOMMANDS = {"precompute": precompute}


def _keep_alive_handler():
    """Werkzeug's handler speaking HTTP/1.1: a gallery page is ~50 small requests, and
    reusing connections instead of opening one per thumbnail roughly halves their cost."""
    from werkzeug.serving import WSGIRequestHandler

    class KeepAlive(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"

    return KeepAlive


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:  # one log line per thumbnail request costs more than serving it
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from .app import create_app, warm_up  # after argparse, so --help answers without importing torch

    app = create_app(args.run_dirs or None, args.data_dir)
    store = app.server.config["XAI_STORE"]
    # While the browser downloads and parses the page's JavaScript, the server is idle: use it.
    threading.Thread(target=warm_up, args=(store,), name="xai-warm-up", daemon=True).start()
    print(f"xai-dashboard: {len(store.runs)} run(s): {', '.join(store.names)}", file=sys.stderr)
    if store.banner:
        print(f"xai-dashboard: note: {store.banner}", file=sys.stderr)
    print(f"xai-dashboard: serving on http://{args.host}:{args.port}/", file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=False,
            threaded=True, request_handler=_keep_alive_handler())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
