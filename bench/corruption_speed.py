"""Seconds to generate each corruption (:mod:`xai_dashboard.corruptions`) for CIFAR-10 test images.

    python bench/corruption_speed.py [--data-dir DIR] [--images 10000] [--severities 3 5]

Target (issue 11): at most 10 s per corruption for 10,000 32x32 images at one severity, on a 2-core CPU.
Prints one line per corruption: seconds at each severity, and microseconds per image at the slowest.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from trainer.sources import read_dataset
from xai_dashboard.corruptions import CORRUPTIONS, corrupt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder with cifar10_test.npz (default: $XAI_DATA_DIR)")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--severities", type=int, nargs="+", default=[3, 5])
    p.add_argument("--only", nargs="*", default=None, help="corruption names (default: all)")
    args = p.parse_args()
    images = read_dataset("cifar10", args.data_dir, train=False).test_x[:args.images]
    images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (N, H, W, 3)
    print(f"{len(images):,} CIFAR-10 test images {images.shape[1:]}")
    print(f"{'corruption':20s} " + " ".join(f"{'sev ' + str(s) + ' s':>9s}" for s in args.severities)
          + f" {'us/image':>9s}")
    worst = 0.0
    for name in args.only or CORRUPTIONS:
        seconds = []
        for severity in args.severities:
            start = time.perf_counter()
            corrupt(images, name, severity, seed=0)
            seconds.append(time.perf_counter() - start)
        worst = max(worst, *seconds)
        print(f"{name:20s} " + " ".join(f"{s:9.2f}" for s in seconds)
              + f" {max(seconds) / len(images) * 1e6:9.1f}", flush=True)
    print(f"slowest: {worst:.2f} s (target <= 10 s per corruption for 10,000 images)")


if __name__ == "__main__":
    main()
