"""Training throughput from an image folder on disk vs the same images held in memory.

Both run the trainer's own step (:class:`trainer.train.Stepper`: augmentation,
autocast, optimiser) on the same decoded images; only the batch source differs:

* file-backed: :class:`trainer.batches.FileSplit`, JPEGs decoded and resized in
  ``--workers`` DataLoader processes while the model trains;
* in-memory: :class:`trainer.batches.MemorySplit`, the folder decoded once
  beforehand (what CIFAR-10 and digits do).

Prints images/s and the share of the time the loop waited for its next batch.
Make a folder first with ``bench/make_image_folder.py``.

    python bench/folder_throughput.py --folder /tmp/cifar128 --size 128 [--model simple_cnn] [--steps 20]
"""
from __future__ import annotations

import argparse
import time

import torch


def measure(split, step, args, device) -> tuple[float, float]:
    """(images/s, fraction of wall time spent waiting for batches) over ``args.steps`` batches."""
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(split), generator=gen)
    batches = [order[i * args.batch_size:(i + 1) * args.batch_size] for i in range(args.steps)]
    for x, y, idx in split.batches(batches[:2]):  # warm-up: allocator, autotuning
        step(x, y, idx, 0, gen)
    wait, seen = 0.0, 0
    t_start = time.perf_counter()
    it = iter(split.batches(batches))
    while True:
        t0 = time.perf_counter()
        try:
            x, y, idx = next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        step(x, y, idx, 0, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seen += len(y)
    total = time.perf_counter() - t_start
    return seen / total, wait / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--folder", required=True, help="ImageFolder root with train/ and test/")
    p.add_argument("--size", type=int, default=128, help="input size in pixels")
    p.add_argument("--model", default="simple_cnn", help="model from the zoo")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--steps", type=int, default=20, help="timed steps per source")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPU cores)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args()

    from trainer.batches import MemorySplit, make_splits
    from trainer.config import resolve
    from trainer.data import Dataset, load_dataset
    from trainer.folders import decode_files
    from trainer.optim import build_optimizer
    from trainer.runtime import pick_device, pick_dtype
    from trainer.train import Stepper, build_model

    device = pick_device(args.device)
    dtype = pick_dtype("auto", device)
    cfg = resolve(None, model=args.model, batch_size=args.batch_size, dataset=f"imagefolder:{args.folder}",
                  input_size=args.size, workers=args.workers)
    ds = load_dataset(cfg.dataset, input_size=args.size, workers=args.workers)
    idx, mf = torch.arange(len(ds.train_y)), torch.channels_last
    files, _, mean, std = make_splits(ds, idx, idx[:0], device, mf)
    t0 = time.perf_counter()
    x, kept = decode_files(ds.train_files, args.size, args.workers)
    decode_s = time.perf_counter() - t0
    no_test = torch.from_numpy(x[:0]), torch.zeros(0, dtype=torch.int64)  # the test split is not needed here
    mem_ds = Dataset(ds.name, torch.from_numpy(x), torch.from_numpy(kept.labels), *no_test, ds.classes)
    memory = MemorySplit(mem_ds, torch.arange(len(kept)), mean, std, device, mf)
    print(f"{len(kept)} training images at {args.size} px; {args.model}, batch {args.batch_size}, "
          f"{args.steps} steps, device {device}, {files.workers} workers; in-memory decode took {decode_s:.1f}s "
          f"({x.nbytes / 1e6:.0f} MB held)")
    for name, split in (("file-backed", files), ("in-memory", memory)):
        torch.manual_seed(0)
        model, _ = build_model(cfg, ds)
        model = model.to(device, memory_format=mf).train()
        step = Stepper(model, build_optimizer(model, cfg), cfg, device, dtype)
        rate, waiting = measure(split, step, args, device)
        print(f"{name:12s} {rate:8.1f} images/s   waiting for data {100 * waiting:5.1f}% of the time")


if __name__ == "__main__":
    main()
