"""Faithfulness latency on the fast CIFAR-10 run, and with ``--means N`` the dataset means.

Latency, one 32x32 image, medians of ``--repeats`` runs (other processes share this CPU):

1. deletion + insertion for one method with both baselines: the map, 8 smoothness-matched
   random maps and the edge map, 2 x 10 x 33 = 660 images in chunked batches   budget 100 ms;
   and the map alone (66 images), as when the baselines are cached for the image
2. the same under bf16 autocast, and how far its AUCs move from fp32's (max |dAUC| over
   ``--images`` images and the 10 maps)
3. ROAD alone: 18 noisy linear imputations (scipy spsolve) + one forward pass of 18 images
4. the whole :func:`xai_dashboard.faithfulness.faithfulness` entry point

The map timed is a 7x7 random map upsampled like Grad-CAM: the cost does not depend on it.

``--means N``: mean deletion / insertion AUC over the first N test images (target: the predicted
class) for Grad-CAM (Captum's LayerGradCam on ``meta["gradcam_layer"]``, ReLU, bilinear
upsampling), smoothness-matched random maps, pixel-random maps and the edge map, plus ROAD for
Grad-CAM and the smooth random map. Random maps: ``--seeds`` per image, seeds distinct across
images, so the image mean averages over N x seeds maps.

    XAI_DATA_DIR=../shared/data/cifar10 .venv/bin/python bench/faithfulness_latency.py [--means 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.preprocess import normalize  # noqa: E402
from trainer.rundir import load_run  # noqa: E402
from trainer.sources import load_test_split  # noqa: E402
from xai_dashboard import faithfulness as fm  # noqa: E402
from xai_dashboard.road import road_images  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN primitives, allocator
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def test_images(meta: dict, n: int) -> torch.Tensor:
    """The first ``n`` CIFAR-10 test images, normalised ``(n, 3, 32, 32)``; random pixels without data."""
    data = Path(os.environ.get("XAI_DATA_DIR", ROOT.parent / "shared" / "data" / "cifar10"))
    if (data / "cifar10_test.npz").is_file():
        x, _ = load_test_split(meta["dataset"], str(data), meta["input_size"])
        x = torch.as_tensor(x[:n])
    else:
        print(f"no CIFAR-10 under {data}: timing random images", flush=True)
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return normalize(x, meta["mean"], meta["std"])


def all_ranks(x: torch.Tensor, attr: torch.Tensor, hw) -> torch.Tensor:
    """What the entry point ranks: the map, 8 smooth random maps, the edge map -> ``(10, H*W)``."""
    maps = torch.cat([attr[None], fm.random_maps(32, 32, layer_hw=hw), fm.edge_map(x)[None]])
    return fm.removal_ranks(maps)


def latency(model, x: torch.Tensor, repeats: int, hw) -> None:
    attr = fm.random_maps(32, 32, layer_hw=hw, seeds=1, first_seed=99)[0]
    target = int(fm.class_probabilities(model, [x[:1]]).argmax())
    xi, ranks = x[0], fm.removal_ranks(attr)
    for bf16 in (False, True):
        tag = "bf16" if bf16 else "fp32"

        def method_only():
            return fm.deletion_insertion(model, xi, target, ranks, 32, bf16=bf16)

        def with_baselines():
            return fm.baselines(model, xi, target, layer_hw=hw, bf16=bf16), method_only()

        ms = median_ms(with_baselines, repeats)
        print(f"deletion + insertion, map + 8 random + edge (660 images), {tag}: {ms:7.1f} ms"
              f"   budget 100 ms   {'OK' if ms <= 100 else 'OVER'}   ({660 / ms * 1000:.0f} images/s)", flush=True)
        ms = median_ms(method_only, repeats)
        print(f"deletion + insertion, the map alone (66 images), {tag}:         {ms:7.1f} ms"
              f"   (baselines cached per image)", flush=True)
    worst = 0.0
    for i in range(len(x)):
        t = int(fm.class_probabilities(model, [x[i:i + 1]]).argmax())
        ranks_i = all_ranks(x[i], attr, hw)
        a32 = [fm.auc(c) for c in fm.deletion_insertion(model, x[i], t, ranks_i, 32)]
        a16 = [fm.auc(c) for c in fm.deletion_insertion(model, x[i], t, ranks_i, 32, bf16=True)]
        worst = max(worst, *(float(np.abs(p - q).max()) for p, q in zip(a32, a16)))
    print(f"bf16 vs fp32: max |AUC difference| over {len(x)} images x 10 maps x 2 curves: {worst:.4f}")
    ms = median_ms(lambda: fm.road(model, xi, target, attr), repeats)
    print(f"ROAD (18 imputations + 1 forward of 18), fp32:                   {ms:7.1f} ms", flush=True)
    ms = median_ms(lambda: road_images(xi.numpy(), ranks[0].numpy()), repeats)
    print(f"  of which the 18 imputations (scipy spsolve):                  {ms:7.1f} ms", flush=True)
    ms = median_ms(lambda: fm.faithfulness(model, xi, target, attr, layer_hw=hw), repeats)
    print(f"faithfulness() entry point, everything, fp32:                    {ms:7.1f} ms", flush=True)


def gradcam(model, layer: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Captum Grad-CAM ``(N, H, W)``: ReLU at the layer's resolution, then bilinear upsampling."""
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, model.get_submodule(layer)).attribute(x.requires_grad_(), target=target)
    cam = torch.relu(cam.detach())
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")[:, 0]


def means(model, meta: dict, x: torch.Tensor, seeds: int, hw) -> None:
    with torch.no_grad():
        pred = model(x).argmax(1)
    cams = torch.cat([gradcam(model, meta["gradcam_layer"], xb.clone(), pb)
                      for xb, pb in zip(x.split(100), pred.split(100))])
    names = ["Grad-CAM", f"smooth random ({hw[0]}x{hw[1]})", "pixel random", "edge (Sobel)"]
    rows, road_gap = [], {"Grad-CAM": [], "smooth random": []}
    t0 = time.perf_counter()
    for i in range(len(x)):
        smooth = fm.random_maps(32, 32, layer_hw=hw, seeds=seeds, first_seed=i * seeds)
        pixel = fm.random_maps(32, 32, seeds=seeds, first_seed=i * seeds)
        maps = torch.cat([cams[i][None], smooth, pixel, fm.edge_map(x[i])[None]])
        dele, ins = fm.deletion_insertion(model, x[i], int(pred[i]), fm.removal_ranks(maps), 32)
        d, a = fm.auc(dele), fm.auc(ins)
        groups = [slice(0, 1), slice(1, 1 + seeds), slice(1 + seeds, 1 + 2 * seeds), slice(-1, None)]
        rows.append([(d[g].mean(), a[g].mean()) for g in groups])
        road_gap["Grad-CAM"].append(fm.road(model, x[i], int(pred[i]), cams[i])["gap"])
        road_gap["smooth random"].append(fm.road(model, x[i], int(pred[i]), smooth[0])["gap"])
    rows = np.asarray(rows)  # (N, 4, 2)
    print(f"\nmeans over {len(x)} CIFAR-10 test images, predicted class, {seeds} random map(s) per image "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"{'map':28s} {'deletion AUC':>14s} {'insertion AUC':>14s}")
    for j, name in enumerate(names):
        m, s = rows[:, j].mean(0), rows[:, j].std(0, ddof=1) / np.sqrt(len(x))
        print(f"{name:28s} {m[0]:8.3f} ±{s[0]:.3f} {m[1]:8.3f} ±{s[1]:.3f}   (± standard error)")
    for name, gaps in road_gap.items():
        g = np.asarray(gaps)
        print(f"ROAD LeRF - MoRF probability gap, {name:14s} {g.mean():+.3f} ±{g.std(ddof=1) / np.sqrt(len(g)):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=str(ROOT / "checkpoints" / "cifar10-fast"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--images", type=int, default=20, help="images for the bf16 closeness check")
    p.add_argument("--means", type=int, default=0, help="also print means over this many test images")
    p.add_argument("--seeds", type=int, default=1, help="random maps per image for --means")
    args = p.parse_args()
    run = load_run(args.run, check_predictions=False)
    # channels-last weights, as explain.shared_model gives the dashboard's own model
    model = run.load_model("cpu").to(memory_format=torch.channels_last)
    hw = next(tuple(layer["shape"][1:]) for layer in run.meta["layers"] if layer["name"] == run.meta["gradcam_layer"])
    print(f"{run.path.name}: Grad-CAM layer {run.meta['gradcam_layer']} at {hw[0]}x{hw[1]}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    x = test_images(run.meta, max(args.images, args.means))
    latency(model, x[:args.images], args.repeats, hw)
    if args.means:
        means(model, run.meta, x[:args.means], args.seeds, hw)


if __name__ == "__main__":
    main()
