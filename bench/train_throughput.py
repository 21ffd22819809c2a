"""Training throughput: our step for each recipe against a conventional PyTorch loop, in one process.

Ours: CIFAR-10 held in memory as normalised tensors, batch-level tensor
augmentation (:mod:`trainer.augment`), channels_last, bf16 autocast where the
CPU supports it, with each recipe's optimiser and batch size (``fast-sgd``: SGD +
lookahead at 1024; ``fast``: Muon at 2000). Conventional: torchvision
``DataLoader`` with per-image ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, ``num_workers=2``, fp32,
NCHW, plain SGD, at the last recipe's batch size. The contenders take turns for
``--rounds`` rounds of ``--steps`` steps each (so load from other processes hits
them alike); the median round is reported.

    python bench/train_throughput.py [--recipes fast-sgd,fast] [--steps 6] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch


def ours(recipe: str, x_u8, y, batch_size: int | None, dtype) -> tuple[int, Callable[[int], None]]:
    """(batch size, run(n_steps)) for ``recipe``'s training step, lookahead included."""
    from trainer.config import resolve
    from trainer.data import channel_stats
    from trainer.models import create_model
    from trainer.optim import LookaheadAverage, build_optimizer
    from trainer.preprocess import normalize
    from trainer.train import Stepper

    cfg = resolve(recipe, **({"batch_size": batch_size} if batch_size else {}))
    mean, std = channel_stats(x_u8)
    x = x_u8.contiguous(memory_format=torch.channels_last)  # uint8, normalised per batch as in training
    torch.manual_seed(0)
    model = create_model(cfg.model).to(memory_format=torch.channels_last).train()
    model.init_whitening(normalize(x_u8[:5000], mean, std))
    step = Stepper(model, build_optimizer(model, cfg), cfg, torch.device("cpu"), dtype)
    ema = LookaheadAverage(model, 10_000) if cfg.lookahead_every else None
    gen = torch.Generator().manual_seed(0)
    idx, b, done = torch.arange(len(y)), cfg.batch_size, 0

    def run(n_steps: int) -> None:
        nonlocal done
        for _ in range(n_steps):
            sel = idx[(done * b) % (len(y) - b + 1):][:b]
            step(normalize(x[sel], mean, std), y[sel], sel, 0, gen)
            done += 1
            if ema and done % cfg.lookahead_every == 0:
                ema.update(model, done)

    return b, run


def conventional(model_name: str, x_u8, y, batch_size: int) -> Callable[[int], None]:
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Dataset

    from trainer.models import create_model

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
    loader = DataLoader(CifarPIL(x_u8, y, tf), batch_size=batch_size, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True)
    torch.manual_seed(0)
    model = create_model(model_name).train()
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

    return run


def main() -> None:
    from trainer.data import load_dataset
    from trainer.models import create_model
    from trainer.runtime import pick_dtype
    from trainer.writer import forward_gflops

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="fast-sgd,fast", help="comma-separated recipes (all use the same model)")
    p.add_argument("--batch-size", type=int, default=None, help="override every recipe's batch size")
    p.add_argument("--steps", type=int, default=6, help="steps per contender per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-conventional", action="store_true")
    p.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc malloc's defaults (xai-train applies trainer.runtime.keep_freed_memory)")
    args = p.parse_args()
    if not args.default_malloc:
        from trainer.runtime import keep_freed_memory

        keep_freed_memory()
    from trainer.config import resolve

    recipes = args.recipes.split(",")
    model_name = resolve(recipes[0]).model
    ds = load_dataset("cifar10", args.data_dir)
    x_u8, y = ds.train_x[:16_000], ds.train_y[:16_000]
    dtype = pick_dtype("auto", torch.device("cpu"))
    gflop = forward_gflops(create_model(model_name), 3, 32)
    contenders: dict[str, tuple[int, Callable[[int], None]]] = {}
    for r in recipes:
        contenders[r] = ours(r, x_u8, y, args.batch_size, dtype)
    if not args.no_conventional:
        b = contenders[recipes[-1]][0]
        contenders["conventional"] = (b, conventional(model_name, x_u8, y, b))
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for _, run in contenders.values():
        run(2)  # warm-up: oneDNN primitive creation, DataLoader workers
    for _ in range(args.rounds):
        for name, (b, run) in contenders.items():
            t0 = time.perf_counter()
            run(args.steps)
            rates[name].append(args.steps * b / (time.perf_counter() - t0))
    print(f"model={model_name} steps={args.steps} rounds={args.rounds} threads={torch.get_num_threads()} "
          f"autocast={dtype} malloc={'default' if args.default_malloc else 'kept'} (median round; GFLOP/s at {gflop:.3f} GFLOP/forward, x3 for training)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, (b, _) in contenders.items():
        rounds = " ".join(f"{v:.0f}" for v in rates[name])
        print(f"{name:<14} batch={b:<5} {med[name]:8.1f} images/s  {med[name] * 3 * gflop:5.0f} GFLOP/s  "
              f"(rounds: {rounds})")
    for name in recipes[1:]:
        print(f"ratio {name} / {recipes[0]}: {med[name] / med[recipes[0]]:.2f}x")
    if "conventional" in med:
        for name in recipes:
            print(f"ratio {name} / conventional: {med[name] / med['conventional']:.2f}x")


if __name__ == "__main__":
    main()
