"""Commands::

    xai-dashboard [RUN_DIR|FOLDER_OF_RUNS ...] [--data-dir DIR] [--image-root DIR] [--host 127.0.0.1] [--port 8050]
                                                                                  serve the dashboard
    xai-dashboard precompute gradcam RUN [RUN ...] [--data-dir DIR] [--batch-size N] write RUN/gradcam.npz
    xai-dashboard precompute sanity RUN [RUN ...] [--data-dir DIR] [--images N] [--device D] write RUN/sanity.json
    xai-dashboard precompute scoreboard RUN [RUN ...] [--images N] [--device D] write RUN/scoreboard.npz, print its table
    xai-dashboard precompute embeddings RUN [RUN ...] [--data-dir DIR]  write RUN/embeddings.npz, RUN/embedding_map.npz
    xai-dashboard precompute stress RUN [RUN ...] [--images N]  write RUN/stress.npz, print its accuracy table

``precompute gradcam`` also runs sharded under torchrun, one process per GPU (or gloo on the CPU)::

    torchrun --nproc_per_node N -m xai_dashboard.cli precompute gradcam RUN [RUN ...]

A first argument naming a subcommand selects it, so a run directory that happens to be
called ``precompute`` is given as ``./precompute``.
"""
from __future__ import annotations

import argparse
import logging
import os
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
                   help="run directories, or folders of runs (every run inside is opened); default: the runs "
                        "in the shipped checkpoints/ and in ./checkpoints/ and ./runs/, whichever exist")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with cifar10_train.npz / cifar10_test.npz (default: $XAI_DATA_DIR, "
                        "else torchvision's download cache)")
    p.add_argument("--image-root", metavar="DIR", action="append", default=[],
                   help="where image-folder runs' images are now, if their folder moved: the folder itself or "
                        "the folder that holds it (repeatable; added to $XAI_IMAGE_ROOT)")
    p.add_argument("--human-labels", metavar="FILE",
                   help="annotator label distributions of the test set (.npz with probs N x K and y; default: "
                        "$XAI_HUMAN_LABELS, else e.g. cifar10h_test_probs.npz in the data folder)")
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
    g.add_argument("--device", default="auto",
                   help="auto, cpu or cuda; under torchrun each process uses cuda:LOCAL_RANK (default: %(default)s)")
    s = what.add_parser("sanity", help="model- and data-randomisation sanity checks of every attribution method "
                                       "(Adebayo et al. 2018) -> RUN/sanity.json; continues an interrupted run")
    s.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories")
    s.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's npz files (default: $XAI_DATA_DIR)")
    s.add_argument("--images", type=int, default=200, metavar="N",
                   help="test images, stratified by class (default: %(default)s)")
    s.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per pass (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="image choice and random weights (default: %(default)s)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    b = what.add_parser("scoreboard", help="deletion/insertion AUC of every attribution method against random and "
                                           "edge maps -> RUN/scoreboard.npz; continues an interrupted run")
    b.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories")
    b.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's npz files (default: $XAI_DATA_DIR)")
    b.add_argument("--images", type=int, default=1000, metavar="N",
                   help="test images, stratified by class (default: %(default)s)")
    b.add_argument("--batch-size", type=int, default=20, metavar="N",
                   help="images per batch; the file is saved after each (default: %(default)s)")
    b.add_argument("--seed", type=int, default=0, help="image choice (default: %(default)s)")
    b.add_argument("--device", default="auto",
                   help="auto, cpu or cuda: maps and perturbed images run there (default: %(default)s)")
    e = what.add_parser("embeddings", help="penultimate features of every training and test image -> "
                                           "RUN/embeddings.npz; PCA and UMAP maps of the test set -> "
                                           "RUN/embedding_map.npz")
    e.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories")
    e.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's npz files (default: $XAI_DATA_DIR)")
    e.add_argument("--batch-size", type=int, default=500, metavar="N", help="images per pass (default: %(default)s)")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    t = what.add_parser("stress", help="predictions on 14 common corruptions x 5 severities (Hendrycks & "
                                       "Dietterich 2019) -> RUN/stress.npz, print its accuracy table; "
                                       "continues an interrupted run")
    t.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories")
    t.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's npz files (default: $XAI_DATA_DIR)")
    t.add_argument("--images", type=int, default=None, metavar="N",
                   help="test images, stratified by class (default: the whole test set)")
    t.add_argument("--batch-size", type=int, default=500, metavar="N", help="images per pass (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="image choice and corruption noise (default: %(default)s)")
    return p


# Kinds whose function shards its work under torchrun (trainer.distributed); others refuse to run there.
SHARDED = {"gradcam"}


def precompute(argv: list[str]) -> int:
    """``xai-dashboard precompute WHAT RUN ...``: one tqdm bar per run; 1 if any run failed.

    WHAT names a job kind of :data:`.jobs.KINDS`; its function gets the subcommand's options as keywords.
    Under torchrun (WORLD_SIZE > 1) a kind of :data:`SHARDED` joins the process group once for all
    runs; each rank computes its shard, and only rank 0 shows progress and writes.
    """
    import importlib

    from .jobs import KINDS

    args = build_precompute_parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.what not in SHARDED:
        print(f"xai-dashboard precompute: {args.what} does not run under torchrun; run it as one process",
              file=sys.stderr)
        return 2
    module, _, name = KINDS[args.what].partition(":")
    compute = getattr(importlib.import_module(module), name)  # after argparse: --help answers without torch
    options = {k: v for k, v in vars(args).items() if k not in ("what", "run_dirs", "data_dir")}
    from trainer.distributed import session
    from trainer.runtime import keep_freed_memory, pick_device

    try:
        pick_device(options.get("device", "cpu"))  # a device this machine lacks: one line, before any work
    except ValueError as e:
        print(f"xai-dashboard precompute: {e}", file=sys.stderr)
        return 2
    keep_freed_memory()  # a batch job in its own process: no page faults on every batch's tensors
    with session(options.get("device", "cpu")) as (ctx, _):
        failed = sum(not _precompute_one(compute, run_dir, args.data_dir, options, show=ctx.is_main)
                     for run_dir in args.run_dirs)
    return 1 if failed else 0


def _precompute_one(compute, run_dir: str, data_dir: str | None, options: dict, show: bool) -> bool:
    """Run ``compute`` for one run directory with a tqdm bar (when ``show``); False when it failed."""
    from pathlib import Path

    from tqdm import tqdm

    from trainer.rundir import RunDirError

    with tqdm(desc=Path(run_dir).resolve().name, unit="map", file=sys.stderr, disable=not show) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        try:
            path = compute(run_dir, data_dir, **options, progress=progress)
        except (RunDirError, OSError, ValueError) as e:
            if show:  # every rank fails alike on a bad run; one message is enough
                bar.write(f"xai-dashboard precompute: {run_dir}: {e}")
            return False
    if show:
        print(f"wrote {path}", file=sys.stderr)
        if compute.__name__ in REPORTS:
            print(REPORTS[compute.__name__](run_dir))
    return True


def _scoreboard_report(run_dir: str) -> str:
    from trainer.rundir import load_run

    from .methods import METHODS
    from .scoreboard_file import format_table, load_scoreboard, table_rows

    data, note = load_scoreboard(run_dir, load_run(run_dir).meta)
    return "\n".join([note, format_table(table_rows(data), {m: METHODS[m].label for m in METHODS})]).strip()


def _stress_report(run_dir: str) -> str:
    from trainer.rundir import load_run

    from .stress_file import accuracy_table, format_table, load_stress, sample_note

    meta = load_run(run_dir).meta
    data, note = load_stress(run_dir, meta)
    table = format_table(accuracy_table(data), sample_note(data, meta["dataset"]["num_test"]))
    return "\n".join([note, table]).strip()


# What a finished job prints on stdout, by its function's name.
REPORTS = {"precompute_scoreboard": _scoreboard_report, "precompute_stress": _stress_report}


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

    if args.image_root:  # in the environment, so precompute jobs started from the page find the images too
        from trainer.sources import IMAGE_ROOT_ENV

        os.environ[IMAGE_ROOT_ENV] = os.pathsep.join(
            [*args.image_root, *filter(None, [os.environ.get(IMAGE_ROOT_ENV)])])
    if args.human_labels:  # in the environment, like --image-root, so every worker and job reads the same file
        from .human_labels import HUMAN_LABELS_ENV

        os.environ[HUMAN_LABELS_ENV] = os.path.abspath(args.human_labels)
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
