"""AugMix training (trainer.augmix): the Jensen-Shannon consistency loss against its definition, the views,
and a short digits run with ``--augmix``."""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from trainer.augmix import AugMixer, js_divergence
from trainer.cli import config_from_args
from trainer.config import resolve
from trainer.rundir import load_run
from trainer.train import train


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_js_divergence_is_the_entropy_of_the_mixture_minus_the_mean_entropy():
    """JS(p_1..p_n) = H(mean p_i) - mean H(p_i) (Lin 1991); for two it is scipy's Jensen-Shannon distance squared."""
    rng = np.random.default_rng(0)
    logits = [rng.normal(scale=3, size=(20, 10)) for _ in range(3)]
    probs = [_softmax(z) for z in logits]
    got = js_divergence(*map(torch.from_numpy, logits)).numpy()
    mixture = np.mean(probs, 0)
    expected = entropy(mixture, axis=1) - np.mean([entropy(p, axis=1) for p in probs], 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    two = js_divergence(*map(torch.from_numpy, logits[:2])).numpy()
    np.testing.assert_allclose(two, jensenshannon(probs[0], probs[1], axis=1) ** 2, rtol=1e-4, atol=1e-6)
    same = torch.from_numpy(logits[0])
    assert torch.allclose(js_divergence(same, same, same), torch.zeros(20), atol=1e-6)
    assert (got > 0).all() and (got <= np.log(3) + 1e-6).all()  # bounded by log(number of distributions)


def test_views_are_reproducible_normalised_augmentations():
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    mixer = AugMixer(mean, std)
    assert mixer.transform.all_ops is False  # no contrast, colour, brightness or sharpness: CIFAR-10-C stays unseen
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8))
    x = (pixels.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    a = mixer.views(x, torch.Generator().manual_seed(1))
    b = mixer.views(x, torch.Generator().manual_seed(1))
    c = mixer.views(x, torch.Generator().manual_seed(2))
    assert a.shape == (80, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    back = a * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    assert not torch.equal(a[:40], a[40:])  # two different views
    assert (a[:40] - x).abs().mean() > 0.01


def test_augmix_flag_and_a_short_digits_run(tmp_path):
    cfg, _ = config_from_args(["--recipe", "digits", "--augmix", "--augmix-weight", "6", "--epochs", "1",
                            "--out", str(tmp_path / "cli")])
    assert cfg.augmix and cfg.augmix_weight == 6
    run = load_run(train(resolve("digits", epochs=1, augmix=True, out=str(tmp_path / "r"))))
    assert run.meta["config"]["augmix"] is True and np.isfinite(run.history[0]["train_loss"])
    assert run.meta["test_accuracy"] > 0.5  # ten classes: chance is 0.1
