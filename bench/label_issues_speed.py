"""Time the label-issue ranking (cleanlab) on a run's stored test probabilities; target ≤ 2 s for 10,000 images.

Reads only the run's ``predictions.npz`` (labels and logits; no images). Prints the one-off
import of cleanlab (paid on the first request of a worker), the first ranking, then the median
and worst of ``--repeats`` rankings (wall and CPU seconds, per 1,000 images), the number of
images cleanlab flags and the 1-minute load average (other processes may share this CPU). With
``--humans FILE`` (e.g. the CIFAR-10H npz) it also prints the humans-vs-model figures.

    .venv/bin/python bench/label_issues_speed.py [--run checkpoints/cifar10-fast] [--repeats 10] \\
        [--humans ../shared/data/cifar10/cifar10h_test_probs.npz]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.rundir import load_run  # noqa: E402
from xai_dashboard.store import softmax  # noqa: E402


def timed(fn, *args):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t, time.process_time() - c


def humans(labels: np.ndarray, probs: np.ndarray, path: Path) -> None:
    from xai_dashboard import human_analysis as ha
    from xai_dashboard.human_labels import read

    human = read(path, labels, probs.shape[1])
    c, wall, _ = timed(ha.compare, labels, probs, human)
    r, cal = c.correlation, c.calibration
    print(f"humans vs model ({path.name}, computed in {wall:.2f} s):")
    print(f"  off-diagonal pattern correlation: Pearson {r['pearson']:.3f}, Spearman {r['spearman']:.3f} "
          f"({r['cells']} cells)")
    for key, (title, definition, _) in ha.SLICES.items():
        print(f"  {title}: {len(c.slices[key]):,}  ({definition})")
    print(f"  ECE vs hard labels {cal['ece_hard']:.4f}, vs people {cal['ece_human']:.4f}; cross-entropy vs hard "
          f"labels {cal['ce_hard']:.4f}, vs people {cal['ce_human']:.4f} nats; KL(people||model) "
          f"{cal['kl_human']:.4f}; agreement with a random annotator {cal['agreement']:.2%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "checkpoints" / "cifar10-fast"))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--humans", type=Path, help="annotator npz (probs, y) to print the humans-vs-model figures")
    args = ap.parse_args()
    run = load_run(args.run)
    labels = run.predictions["label"].astype(np.int64)
    probs = softmax(run.predictions["logits"])
    n = len(labels)
    print(f"{run.name}: {n:,} test images, {probs.shape[1]} classes; load average {os.getloadavg()[0]:.2f}")

    _, wall, _ = timed(lambda: __import__("cleanlab.filter") and __import__("cleanlab.rank"))
    print(f"import cleanlab (once per process): {wall:.2f} s")
    from xai_dashboard.label_issues import issues_frame

    frame, wall, cpu = timed(issues_frame, labels, probs)
    print(f"first ranking: {wall:.3f} s wall, {cpu:.3f} s CPU; cleanlab flags {len(frame):,} images "
          f"({len(frame) / n:.2%})")
    walls, cpus = [], []
    for _ in range(args.repeats):
        _, wall, cpu = timed(issues_frame, labels, probs)
        walls.append(wall)
        cpus.append(cpu)
    med = statistics.median(walls)
    print(f"ranking x{args.repeats}: median {med:.3f} s wall ({med / n * 1000:.3f} s per 1,000 images), worst "
          f"{max(walls):.3f} s; median CPU {statistics.median(cpus):.3f} s; target 2 s for 10,000 "
          f"({'met' if max(walls) <= 2.0 else 'MISSED'})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.humans:
        humans(labels, probs, args.humans)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
