"""The fast recipes' data path and evaluation: uint8 batches normalised per draw, one-gather
augmentation, and test-time augmentation reusing the plain logits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainer.augment import AugmentConfig, augment_batch
from trainer.batches import MemorySplit
from trainer.data import load_dataset
from trainer.evaluate import predict, predict_tta
from trainer.preprocess import normalize
from trainer.rundir import load_run

DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "digits-demo"


def test_translate_and_mirror_equals_mirror_then_pad_then_crop():
    """Reference: torch.flip, F.pad and slicing per image, with the offsets drawn from the same
    generator in the same order (flip bits come from the image indices, not the generator)."""
    x = torch.randn(40, 3, 12, 12)
    idx = torch.arange(100, 140)
    for pad_mode, flip in (("reflect", "alternate"), ("zeros", "alternate"), ("reflect", "none")):
        cfg = AugmentConfig(translate=2, pad_mode=pad_mode, flip=flip)
        out = augment_batch(x, idx, 1, cfg, torch.Generator().manual_seed(7), seed=3)
        assert out.is_contiguous(memory_format=torch.channels_last)
        gen = torch.Generator().manual_seed(7)
        dx, dy = torch.randint(0, 5, (40,), generator=gen), torch.randint(0, 5, (40,), generator=gen)
        flips = 0
        for i in range(40):
            mirrored = augment_batch(x[i:i + 1], idx[i:i + 1], 1, AugmentConfig(translate=0, flip=flip),
                                     None, seed=3)
            flips += not torch.equal(mirrored, x[i:i + 1])
            assert torch.equal(mirrored, x[i:i + 1]) or torch.equal(mirrored, x[i:i + 1].flip(-1))
            padded = F.pad(mirrored, (2, 2, 2, 2), mode="reflect" if pad_mode == "reflect" else "constant")
            assert torch.equal(out[i], padded[0, :, dy[i]:dy[i] + 12, dx[i]:dx[i] + 12])
        assert (flips > 5) == (flip == "alternate")


def test_memory_split_keeps_uint8_and_yields_normalised_batches():
    ds = load_dataset("digits")
    idx = torch.arange(200)
    mean, std = [0.2], [0.3]
    split = MemorySplit(ds, idx, mean, std, torch.device("cpu"), torch.channels_last)
    assert split.x.dtype == torch.uint8
    b = torch.tensor([5, 0, 17])
    x, y, i = next(split.batches([b]))
    torch.testing.assert_close(x, (ds.train_x[b].float() / 255 - 0.2) / 0.3)
    assert torch.equal(y, ds.train_y[b]) and torch.equal(i, b)
    torch.testing.assert_close(split.whitening_sample(50), normalize(ds.train_x[:50], mean, std))


def test_tta_with_the_plain_logits_given_equals_computing_all_six_views():
    run = load_run(DEMO)
    model = run.load_model()
    ds = load_dataset("digits")
    images, mean, std = ds.test_x[:64], run.meta["mean"], run.meta["std"]
    plain, _ = predict(model, images, mean, std, channels_last=True)
    full = predict_tta(model, images, mean, std, batch_size=24)
    reused = predict_tta(model, images, mean, std, batch_size=24, channels_last=True, plain=plain)
    np.testing.assert_allclose(reused, full, atol=1e-4)
    # The published weighting: 1/4 each for the image and its mirror, 1/8 for each of the four shifts.
    x = normalize(images, mean, std)
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, x.flip(-1), p[..., :-2, :-2], p[..., :-2, :-2].flip(-1), p[..., 2:, 2:], p[..., 2:, 2:].flip(-1)]
    with torch.no_grad():
        logits = [model(v).numpy() for v in views]
    expected = sum(w * lg for w, lg in zip((0.25, 0.25, 0.125, 0.125, 0.125, 0.125), logits))
    np.testing.assert_allclose(full, expected, atol=1e-4)
