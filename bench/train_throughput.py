"""Training throughput: our step against a conventional PyTorch loop, in one process.

Ours: CIFAR-10 held in memory as normalised tensors, batch-level tensor
augmentation (:mod:`trainer.augment`), channels_last, bf16 autocast where the
CPU supports it. Conventional: torchvision ``DataLoader`` with per-image
``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
``Normalize``, ``num_workers=2``, fp32, NCHW. Same model, batch size, optimiser.

    python bench/train_throughput.py [--model fast] [--batch-size 1024] [--steps 12]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def ours(model, x_u8, y, args, dtype) -> float:
    from trainer.config import resolve
    from trainer.data import channel_stats
    from trainer.optim import build_optimizer
    from trainer.preprocess import normalize
    from trainer.train import Stepper

    cfg = resolve("fast", batch_size=args.batch_size)
    mean, std = channel_stats(x_u8)
    x = normalize(x_u8, mean, std).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last).train()
    step = Stepper(model, build_optimizer(model, cfg), cfg, torch.device("cpu"), dtype)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(len(y))

    def run(n_steps: int) -> None:
        for i in range(n_steps):
            b = idx[(i * args.batch_size) % len(y):][: args.batch_size]
            step(x[b], y[b], b, 0, gen)

    run(2)  # warm-up: oneDNN primitive creation
    t0 = time.perf_counter()
    run(args.steps)
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def conventional(model, x_u8, y, args) -> float:
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Dataset

    class CifarPIL(Dataset):
        def __init__(self, x, y, transform):
            self.x, self.y, self.t = x.permute(0, 2, 3, 1).numpy(), y, transform

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            from PIL import Image

            return self.t(Image.fromarray(self.x[i])), int(self.y[i])

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    loader = DataLoader(CifarPIL(x_u8, y, tf), batch_size=args.batch_size, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True)
    model = model.to(memory_format=torch.contiguous_format).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    it = iter(loader)

    def run(n_steps: int) -> None:
        nonlocal it
        for _ in range(n_steps):
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
            loss = crit(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(2)
    t0 = time.perf_counter()
    run(args.steps)
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def main() -> None:
    from trainer.data import load_dataset
    from trainer.models import create_model
    from trainer.runtime import pick_dtype
    from trainer.writer import forward_gflops

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fast")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    args = p.parse_args()
    ds = load_dataset("cifar10", args.data_dir)
    n = args.batch_size * 16
    x_u8, y = ds.train_x[:n], ds.train_y[:n]
    dtype = pick_dtype("auto", torch.device("cpu"))
    torch.manual_seed(0)
    gflop = forward_gflops(create_model(args.model), 3, 32)
    a = ours(create_model(args.model), x_u8, y, args, dtype)
    b = conventional(create_model(args.model), x_u8, y, args)
    print(f"model={args.model} batch={args.batch_size} steps={args.steps} threads={torch.get_num_threads()} "
          f"autocast={dtype}")
    print(f"ours:         {a:8.1f} images/s  ({a * 3 * gflop:.0f} GFLOP/s at {gflop:.3f} GFLOP/forward, x3 for training)")
    print(f"conventional: {b:8.1f} images/s  ({b * 3 * gflop:.0f} GFLOP/s)")
    print(f"ratio:        {a / b:8.2f}x")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
