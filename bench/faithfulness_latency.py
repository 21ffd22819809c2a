"""Faithfulness latency on the fast CIFAR-10 run, and with ``--means N`` the dataset means.

Latency, one 32x32 image, medians of ``--repeats`` runs (other processes share this CPU), in fp32
and under bf16 autocast (what the card and the scoreboard use where the CPU has native bf16):

1. deletion + insertion for one method with both baselines: the map, 8 smoothness-matched random
   maps and the edge map; every curve's first and last image (the image, the mean colour, the
   blurred image) is forwarded once per call, so :func:`baselines` (9 maps) and the map's own
   curves forward 2 x (2 + 9 x 31) + 2 x (2 + 31) = 628 images in chunked batches   budget 100 ms;
   and the map alone (66 images), as when the image's baselines are cached (the card's second
   method on an image)
2. how far bf16 moves the AUCs from fp32 (max |dAUC| over ``--images`` images and the 10 maps)
3. ROAD alone: 18 noisy linear imputations (scipy sparse LU) + one forward pass of 18 images
4. the whole :func:`xai_dashboard.faithfulness.faithfulness` entry point (bf16)

The summary block at the end repeats the budgeted figures with the cost of one forward pass and the
FLOP lower bound: images x GFLOP per pass (meta.json) / ``--peak-gflops`` (default 770: bf16 FMA
peak of the 2 AVX-512 cores this project's machine has), which no implementation can beat without
forwarding fewer images.

The map timed is a 7x7 random map upsampled like Grad-CAM: the cost does not depend on it.

``--scoreboard N``: ``xai-dashboard precompute scoreboard`` of N stratified test images on a temporary
copy of the run (the shipped scoreboard.npz is neither read nor overwritten), its wall and CPU time
and the time 1,000 images take at that rate (budget 10 minutes for 1,000 images x every method).

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


def matmul_gflops(repeats: int) -> float:
    """GFLOP/s of a 2048^3 bf16 matmul on this CPU now (same threads, same load as the passes timed)."""
    a, b = torch.randn(2048, 2048, dtype=torch.bfloat16), torch.randn(2048, 2048, dtype=torch.bfloat16)
    return 2 * 2048 ** 3 / median_ms(lambda: a @ b, repeats) / 1e6


def latency(model, x: torch.Tensor, repeats: int, hw, gflop: float, peak: float) -> list[str]:
    """Print the latency lines; return the summary block's lines."""
    attr = fm.random_maps(32, 32, layer_hw=hw, seeds=1, first_seed=99)[0]
    target = int(fm.class_probabilities(model, [x[:1]]).argmax())
    xi, ranks = x[0], fm.removal_ranks(attr)
    full, alone = 2 * (2 + (fm.SEEDS + 1) * 31) + 2 * (2 + 31), 2 * (2 + 31)
    ms = {}
    for bf16 in (False, True):
        tag = "bf16" if bf16 else "fp32"

        def method_only():
            return fm.deletion_insertion(model, xi, target, ranks, 32, bf16=bf16)

        def with_baselines():
            return fm.baselines(model, xi, target, layer_hw=hw, bf16=bf16), method_only()

        ms[tag] = median_ms(with_baselines, repeats)
        print(f"deletion + insertion, map + 8 random + edge ({full} images), {tag}: {ms[tag]:7.1f} ms"
              f"   budget 100 ms   {'OK' if ms[tag] <= 100 else 'OVER'}   ({ms[tag] / full:.2f} ms per image)",
              flush=True)
        ms[tag + " alone"] = median_ms(method_only, repeats)
        print(f"deletion + insertion, the map alone ({alone} images), {tag}:          {ms[tag + ' alone']:7.1f} ms"
              f"   (baselines cached per image)", flush=True)
    worst = 0.0
    for i in range(len(x)):
        t = int(fm.class_probabilities(model, [x[i:i + 1]]).argmax())
        ranks_i = all_ranks(x[i], attr, hw)
        a32 = [fm.auc(c) for c in fm.deletion_insertion(model, x[i], t, ranks_i, 32)]
        a16 = [fm.auc(c) for c in fm.deletion_insertion(model, x[i], t, ranks_i, 32, bf16=True)]
        worst = max(worst, *(float(np.abs(p - q).max()) for p, q in zip(a32, a16)))
    print(f"bf16 vs fp32: max |AUC difference| over {len(x)} images x 10 maps x 2 curves: {worst:.4f}")
    road_ms = median_ms(lambda: fm.road(model, xi, target, attr, bf16=True), repeats)
    print(f"ROAD (18 imputations + 1 forward of 18), bf16:                   {road_ms:7.1f} ms", flush=True)
    ms_imp = median_ms(lambda: road_images(xi.numpy(), ranks[0].numpy()), repeats)
    print(f"  of which the 18 imputations (scipy sparse LU):               {ms_imp:7.1f} ms", flush=True)
    entry = median_ms(lambda: fm.faithfulness(model, xi, target, attr, layer_hw=hw, bf16=True), repeats)
    print(f"faithfulness() entry point, everything, bf16:                    {entry:7.1f} ms", flush=True)
    bound, ceiling = full * gflop / peak * 1000, matmul_gflops(repeats)
    verdict = lambda v: "OK" if v <= 100 else "OVER"  # noqa: E731
    return [
        f"deletion + insertion + both baselines, 1 image x 1 method ({full} images)  budget 100 ms",
        f"  fp32 {ms['fp32']:7.1f} ms {verdict(ms['fp32'])}   bf16 {ms['bf16']:7.1f} ms {verdict(ms['bf16'])}"
        f"   baselines cached (bf16, {alone} images): {ms['bf16 alone']:6.1f} ms {verdict(ms['bf16 alone'])}",
        f"  one forward pass: fp32 {ms['fp32'] / full:.2f} ms, bf16 {ms['bf16'] / full:.2f} ms"
        f" = {full * gflop / ms['bf16'] * 1000:.0f} GFLOP/s at {gflop:.3f} GFLOP per pass",
        f"  FLOP lower bound: {full} x {gflop:.3f} GFLOP / {peak:.0f} GFLOP/s = {bound:.0f} ms"
        f" ({'the budget is within reach' if bound <= 100 else 'over the budget at any efficiency'})",
        f"  a bf16 2048^3 matmul runs at {ceiling:.0f} GFLOP/s here now: the passes reach"
        f" {full * gflop / ms['bf16'] * 1000 / ceiling:.0%} of it, and at its rate {full} passes take"
        f" {full * gflop / ceiling * 1000:.0f} ms",
        f"  bf16 moves the AUCs by at most {worst:.4f} ({len(x)} images x 10 maps)",
        f"  with ROAD, the card's whole computation (bf16): {entry:.0f} ms (ROAD {road_ms:.0f} ms)",
    ]


def scoreboard_time(run_dir: Path, images: int) -> list[str]:
    """Time the scoreboard job on ``images`` images; the summary's lines."""
    import shutil
    import tempfile

    from xai_dashboard.scoreboard import precompute_scoreboard

    data = os.environ.get("XAI_DATA_DIR", str(ROOT.parent / "shared" / "data" / "cifar10"))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("scoreboard.npz"))
        wall, cpu = time.perf_counter(), time.process_time()
        precompute_scoreboard(copy, data, images=images)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per_1000 = wall / images * 1000 / 60
    return [f"scoreboard, {images} images x every method: {wall:.0f} s wall, {cpu:.0f} s CPU"
            f" ({wall / images:.2f} s and {cpu / images:.2f} s CPU per image)",
            f"  1,000 images at that rate: {per_1000:.1f} min   budget 10 min   {'OK' if per_1000 <= 10 else 'OVER'}"]


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
    p.add_argument("--peak-gflops", type=float, default=770.0, help="the CPU's bf16 peak, for the lower bound")
    p.add_argument("--scoreboard", type=int, default=0, help="also time the scoreboard job on this many images")
    args = p.parse_args()
    run = load_run(args.run, check_predictions=False)
    # channels-last weights, as explain.shared_model gives the dashboard's own model
    model = run.load_model("cpu").to(memory_format=torch.channels_last)
    hw = next(tuple(layer["shape"][1:]) for layer in run.meta["layers"] if layer["name"] == run.meta["gradcam_layer"])
    print(f"{run.path.name}: Grad-CAM layer {run.meta['gradcam_layer']} at {hw[0]}x{hw[1]}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    x = test_images(run.meta, max(args.images, args.means))
    summary = latency(model, x[:args.images], args.repeats, hw, run.meta["gflops_per_image"], args.peak_gflops)
    if args.means:
        means(model, run.meta, x[:args.means], args.seeds, hw)
    if args.scoreboard:
        summary += scoreboard_time(run.path, args.scoreboard)
    print(f"\n=== summary ({run.path.name}; load average {os.getloadavg()[0]:.1f}: figures taken under load"
          " are upper bounds) ===")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
