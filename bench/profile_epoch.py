"""Where one training epoch's time goes: torch.profiler over the real training loop, summarised.

Runs :func:`trainer.train.run_epoch` (the loop ``xai-train`` runs) for one epoch of a recipe on
CIFAR-10 (or ``--steps`` steps of it) under ``torch.profiler`` and prints the share of the
epoch's wall time in each category:

* phases the loop names itself: ``data`` (fetching the batch from the in-memory split),
  ``augment``, ``optimizer``, ``lookahead``; inside ``forward`` and ``backward`` each op is put in
  the first category matching its own name or an enclosing op's: convolution, normalisation,
  activation, pooling, linear head, loss, casts & copies (dtype/layout conversions);
* ``python / untracked``: the epoch's wall time that no op covers (interpreter, tqdm).

    python bench/profile_epoch.py [--recipe fast] [--steps N] [--batch-size B] [--top 12]
"""
from __future__ import annotations

import argparse
import math
import os
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

PHASES = ("data", "augment", "optimizer", "lookahead")
# (category, substrings of an op name), tried in order on the op and then on its enclosing ops.
OP_CATEGORIES = (
    ("convolution", ("conv",)),
    ("normalisation", ("batch_norm", "batchnorm")),
    ("activation", ("gelu", "relu")),
    ("pooling", ("pool",)),
    ("linear head", ("linear", "addmm", "aten::mm", "mmbackward")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "logsoftmax", "nllloss")),
    ("casts & copies", ("_to_copy", "copy_", "aten::to", "contiguous", "clone")),
)


def category(event) -> str:
    """Innermost matching op category, unless the op runs inside one of :data:`PHASES`."""
    names, e = [], event
    while e is not None:
        names.append(e.name)
        e = e.cpu_parent
    for phase in PHASES:
        if phase in names:
            return phase
    for name in names:
        low = name.lower()
        for cat, keys in OP_CATEGORIES:
            if any(k in low for k in keys):
                return cat
    return "other ops"


def fetched(batches):
    """Wrap a batch iterator so fetching each batch shows up as the ``data`` phase."""
    it = iter(batches)
    while True:
        with record_function("data"):
            batch = next(it, None)
        if batch is None:
            return
        yield batch


def build(recipe: str, overrides: dict):
    """(stepper, train split, schedule, lookahead, model, config) exactly as ``xai-train`` sets them up."""
    from trainer.batches import make_splits
    from trainer.config import resolve
    from trainer.data import load_dataset, train_val_split
    from trainer.optim import LookaheadAverage, Schedule, build_optimizer
    from trainer.runtime import pick_dtype
    from trainer.train import Stepper, build_model

    cfg = resolve(recipe, **overrides)
    device = torch.device("cpu")
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    tr_idx, va_idx = train_val_split(len(ds.train_y), cfg.val_fraction, cfg.seed)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    split, _, _, _ = make_splits(ds, tr_idx, va_idx, device, mf)
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, ds)
    model.init_whitening(split.whitening_sample(5000))
    model = model.to(device, memory_format=mf).train()
    opt = build_optimizer(model, cfg)
    per_epoch = len(split) // cfg.batch_size
    total = math.ceil(cfg.epochs * per_epoch)
    ema = LookaheadAverage(model, total) if cfg.lookahead_every else None
    step = Stepper(model, opt, cfg, device, pick_dtype(cfg.precision, device))
    return step, split, Schedule(cfg, opt, total, per_epoch), ema, model, cfg


def main() -> None:
    from trainer.runtime import Dist
    from trainer.train import State, epoch_order, run_epoch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="fast")
    p.add_argument("--steps", type=int, default=None, help="profile this many steps (default: one epoch)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--top", type=int, default=12, help="also list the N ops with the most self time")
    p.add_argument("--data-dir", default=os.environ.get("XAI_DATA_DIR"))
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc malloc's defaults (xai-train applies trainer.runtime.keep_freed_memory)")
    args = p.parse_args()
    if not args.default_malloc:
        from trainer.runtime import keep_freed_memory

        keep_freed_memory()
    overrides = {"data_dir": args.data_dir, "out": "/tmp/unused"}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    step, split, schedule, ema, model, cfg = build(args.recipe, overrides)
    order = epoch_order(split.labels, cfg, 0, 10)
    n = args.steps or len(split) // cfg.batch_size
    batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(n + 1)]
    state = State()
    run_epoch(step, split.batches(batches[:1]), 1, state, schedule, ema, model, Dist())  # oneDNN warm-up
    state.epoch = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        record = run_epoch(step, fetched(split.batches(batches[1:])), n, state, schedule, ema, model, Dist())
        wall = time.perf_counter() - t0
    totals: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.name in PHASES + ("forward", "backward") or e.name.startswith("ProfilerStep"):
            continue
        totals[category(e)] += e.self_cpu_time_total / 1e6
        by_op[e.name] += e.self_cpu_time_total / 1e6
    totals["python / untracked"] = max(0.0, wall - sum(totals.values()))
    print(f"recipe={args.recipe} batch={cfg.batch_size} steps={n} threads={torch.get_num_threads()} "
          f"autocast={step.dtype} malloc={'default' if args.default_malloc else 'kept'} wall={wall:.1f}s images/s={record['images_per_s']:.1f} (under the profiler)")
    print(f"{'category':<22}{'seconds':>9}{'share':>8}")
    for cat, sec in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{cat:<22}{sec:9.2f}{sec / wall:8.1%}")
    print(f"\ntop {args.top} ops by self time")
    for name, sec in sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name:<50}{sec:9.2f}{sec / wall:8.1%}")


if __name__ == "__main__":
    main()
