"""Inference speed of the shipped runs: test-set throughput (batch 512) and single-image latency.

    python bench/inference_throughput.py [RUN_DIR ...] [--repeats 20]

For each run: images/s over the whole test split at batch 512 in fp32 and with
bf16 autocast (when the CPU has native bf16), and the median / p95 latency of
a batch-1 forward pass. Synthetic inputs of the run's shape are used, so no
dataset is needed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from trainer.rundir import find_runs, load_run
from trainer.runtime import autocast, cpu_has_bf16

ROOT = Path(__file__).resolve().parent.parent


@torch.no_grad()
def throughput(model, x: torch.Tensor, dtype, batch: int = 512) -> float:
    dev = torch.device("cpu")
    with autocast(dev, dtype):
        model(x[:batch])  # warm-up
        t0 = time.perf_counter()
        for chunk in x.split(batch):
            model(chunk)
    return len(x) / (time.perf_counter() - t0)


@torch.no_grad()
def latency_ms(model, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    one = x[:1]
    for _ in range(5):
        model(one)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(one)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--images", type=int, default=10_000)
    args = p.parse_args()
    runs = args.runs or find_runs(ROOT / "checkpoints")
    bf16 = torch.bfloat16 if cpu_has_bf16() else None
    print(f"threads={torch.get_num_threads()} native_bf16={bf16 is not None}")
    print(f"{'run':24s} {'fp32 img/s':>11s} {'bf16 img/s':>11s} {'fp32 CL img/s':>14s} {'b=1 p50 ms':>11s} {'b=1 p95 ms':>11s}")
    for rd in runs:
        run = load_run(rd, check_predictions=False)
        m = run.meta
        model = run.load_model()
        x = torch.randn(args.images, m["in_channels"], m["input_size"], m["input_size"])
        fp32 = throughput(model, x, None)
        half = throughput(model, x, bf16) if bf16 else float("nan")
        cl_model = run.load_model().to(memory_format=torch.channels_last)
        cl = throughput(cl_model, x.contiguous(memory_format=torch.channels_last), None)
        p50, p95 = latency_ms(model, x, args.repeats)
        print(f"{run.name:24s} {fp32:11.0f} {half:11.0f} {cl:14.0f} {p50:11.2f} {p95:11.2f}")


if __name__ == "__main__":
    main()
