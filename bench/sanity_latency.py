"""Time the model-randomisation sanity check (``xai-dashboard precompute sanity``) on one run.

Runs :func:`xai_dashboard.sanity.precompute_sanity` on a temporary copy of the run directory
(the shipped sanity.json is neither read nor overwritten): the trained model's maps, then one
pass per re-initialised block, every applicable method at its default settings, ``--images``
test images (default 200) in batches of ``--batch-size``. Prints the wall time, maps per
second, one pass of each method on the trained model (wall and CPU seconds), the torch thread
count and the 1-minute load average before and after (other processes share this CPU: the
budget of 5 minutes for cifar10-fast is for an idle machine; with ``--threads 1`` the CPU
seconds are about what an idle core would take).

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/sanity_latency.py [--run checkpoints/cifar10-fast]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.rundir import load_run  # noqa: E402
from trainer.sources import load_test_split  # noqa: E402
from xai_dashboard import sanity  # noqa: E402
from xai_dashboard.explain import to_input  # noqa: E402
from xai_dashboard.sanity_file import SANITY  # noqa: E402


def per_method(run_dir: Path, data_dir: str | None, images: int, batch_size: int) -> dict[str, tuple[float, float]]:
    """``{method: (wall s, CPU s)}`` of one pass over ``images`` test images on the trained model."""
    run = load_run(run_dir)
    x, labels = load_test_split(run.meta["dataset"], data_dir, run.meta["input_size"])
    idx = sanity.stratified_indices(labels, images, 0)
    x = to_input(x[idx], run.meta)
    targets = torch.as_tensor(run.predictions["logits"][idx].argmax(1))
    model = sanity.private_model(run.load_model())
    settings, _ = sanity.applicable_methods(model, x, run.meta)
    out = {}
    for s in settings:
        t, c = time.perf_counter(), time.process_time()
        sanity.all_maps(model, x, targets, [s], batch_size, lambda n: None)
        out[s.method] = time.perf_counter() - t, time.process_time() - c
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=str(ROOT / "checkpoints" / "cifar10-fast"))
    p.add_argument("--data-dir",
                   default=os.environ.get("XAI_DATA_DIR", str(ROOT.parent / "shared" / "data" / "cifar10")))
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=sanity.MAP_BATCH)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: torch's choice; on a shared, loaded CPU 1 avoids oversubscription)")
    p.add_argument("--skip-per-method", action="store_true", help="time only the whole cascade")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = []
    print(f"{Path(args.run).name}: {args.images} images, batches of {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    if not args.skip_per_method:
        for method, (wall, cpu) in per_method(Path(args.run), args.data_dir, args.images, args.batch_size).items():
            print(f"  one pass of {method:22s} {wall:7.1f} s wall, {cpu:7.1f} s CPU", flush=True)
            summary.append(f"  one pass of {method:22s} {cpu / args.images * 1000:6.1f} ms CPU per image")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / Path(args.run).name
        shutil.copytree(args.run, copy)
        (copy / SANITY.name).unlink(missing_ok=True)
        counted = [0]
        start, cpu = time.perf_counter(), time.process_time()
        sanity.precompute_sanity(copy, args.data_dir, images=args.images, batch_size=args.batch_size,
                                 progress=lambda done, total: counted.__setitem__(0, done))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU seconds hardly depend on the load: with one thread they are what an idle core would take
    print(f"whole cascade: {seconds:.1f} s wall ({seconds / 60:.2f} min), {cpu:.1f} s CPU, {counted[0]} maps, "
          f"{counted[0] / seconds:.1f} maps/s; load average now {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n=== summary ({Path(args.run).name}, {args.images} images, {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.1f}: figures taken under load are upper bounds) ===")
    print(f"randomisation cascade: {seconds / 60:.2f} min wall   budget 5 min   {'OK' if seconds <= 300 else 'OVER'}"
          f"   ({cpu / 60:.2f} min CPU, {cpu / counted[0] * 1000:.0f} ms CPU per map)")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
