"""Write a synthetic ImageFolder of realistic size from CIFAR-10, for benchmarks of file-backed training.

Each image is a CIFAR-10 image upscaled to ``--size`` px, randomly cropped and
colour-jittered (torchvision transforms, seeded per image), saved as JPEG in
``OUT/train/CLASS/`` and ``OUT/test/CLASS/``. The folder must lie outside the
repository: generated data is never committed.

    python bench/make_image_folder.py --out /tmp/cifar128 --train 2000 --test 500 --size 128
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _write(job: tuple[np.ndarray, Path, int, int, int]) -> int:
    """Upscale, crop, jitter and save one ``(32, 32, 3)`` uint8 image; returns the file's bytes."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    pixels, path, size, seed, quality = job
    torch.manual_seed(seed)  # torchvision's random transforms draw from torch's global generator
    augment = T.Compose([
        T.Resize(int(size * 1.25), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomCrop(size),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
    ])
    augment(Image.fromarray(pixels)).save(path, quality=quality)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--out", required=True, type=Path, help="folder to create (outside the repository)")
    p.add_argument("--train", type=int, default=2000, help="training images (taken from CIFAR-10 train)")
    p.add_argument("--test", type=int, default=500, help="test images (taken from CIFAR-10 test)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--data-dir", default=None, help="folder with cifar10_{train,test}.npz (default: $XAI_DATA_DIR)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU cores)")
    args = p.parse_args(argv)
    out = args.out.expanduser().resolve()
    if out == REPO or REPO in out.parents:
        print(f"make_image_folder: error: --out {out} is inside the repository; write generated data elsewhere",
              file=sys.stderr)
        return 2
    if out.exists() and any(out.iterdir()):
        print(f"make_image_folder: error: --out {out} exists and is not empty", file=sys.stderr)
        return 2

    from trainer.folders import default_workers
    from trainer.sources import read_dataset

    ds = read_dataset("cifar10", args.data_dir)
    jobs = []
    for split, x, y, n in (("train", ds.train_x, ds.train_y, args.train), ("test", ds.test_x, ds.test_y, args.test)):
        for c in ds.classes:
            (out / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(min(n, len(y))):
            path = out / split / ds.classes[y[i]] / f"{i:06d}.jpg"
            seed = 2 * i + (split == "test")  # reproducible: the same folder every time
            jobs.append((x[i].transpose(1, 2, 0).copy(), path, args.size, seed, args.quality))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers or default_workers()) as pool:
        sizes = list(pool.map(_write, jobs, chunksize=64))
    print(f"wrote {len(jobs)} JPEGs ({args.size} px, {sum(sizes) / 1e6:.1f} MB) to {out} "
          f"in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
