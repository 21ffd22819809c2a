"""The corruptions of Hendrycks & Dietterich (ICLR 2019) in :mod:`xai_dashboard.corruptions`: output type,
determinism per (image, seed), severities ordered as the published parameters order them, and on
hand-made images the values of the published formulas, computed here independently (the standard
library's colorsys for HSV, scipy.ndimage.zoom for the reference's clipped zoom, explicit kernels)."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
from scipy import ndimage

from xai_dashboard.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def _scenes(n: int = 48, side: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 ``(n, side, side, 3)``: smooth random colour fields with a random rectangle on each."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(20, 235, (n, side // 4, side // 4, 3))
    x = ndimage.zoom(coarse, (1, 4, 4, 1), order=1)
    for img in x:
        r, c = rng.integers(0, side - 8, 2)
        img[r:r + 8, c:c + 8] = rng.uniform(0, 255, 3)
    return np.clip(x, 0, 255).astype(np.uint8)


SCENES = _scenes()


def _floor255(x: np.ndarray) -> np.ndarray:
    """The reference stores ``np.uint8(clip(x, 0, 1) * 255)``: truncation."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _distance(name: str, severity: int) -> float:
    return float(np.abs(corrupt(SCENES, name, severity).astype(np.float64) - SCENES).mean())


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_uint8_same_shape_and_deterministic_per_image_and_seed(name):
    x = SCENES[:6]
    a = corrupt(x, name, 3, seed=1, keys=[10, 11, 12, 13, 14, 15])
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, corrupt(x, name, 3, seed=1, keys=[10, 11, 12, 13, 14, 15]))
    # an image's corruption depends on its key, not on the batch it is in
    assert np.array_equal(a[4:5], corrupt(x[4:5], name, 3, seed=1, keys=[14]))
    other = corrupt(x, name, 3, seed=2, keys=[10, 11, 12, 13, 14, 15])
    if CORRUPTIONS[name].random:
        assert all(not np.array_equal(a[i], other[i]) for i in range(len(x)))
    else:
        assert np.array_equal(a, other)
    assert not np.array_equal(a, x)


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in ("saturate", "elastic_transform")])
def test_higher_severity_moves_the_image_further(name):
    distances = [_distance(name, s) for s in SEVERITIES]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_saturate_orders_its_two_directions():
    # published (scale, shift) of the saturation: (0.3, 0), (0.1, 0) desaturate, (1.5, 0), (2, .1), (2.5, .2) saturate
    d = [_distance("saturate", s) for s in SEVERITIES]
    assert d[0] < d[1] and d[2] < d[3] < d[4], d


def test_elastic_severity_1_is_an_affine_warp_and_later_ones_are_not():
    """Severity 1 moves three points by up to 8 % of the side and adds no elastic field (alpha = 0): a linear
    ramp stays linear away from the borders; with the field (severity 4: alpha 3.2 px, sigma 1.3 px) it bends."""
    yy, xx = np.mgrid[0:32, 0:32]
    ramp = np.repeat((40 + 4 * xx + 2 * yy)[None, ..., None], 3, -1).astype(np.uint8)[[0] * 4]
    design = np.c_[xx[8:24, 8:24].ravel(), yy[8:24, 8:24].ravel(), np.ones(256)]

    def residual(image):
        values = image[8:24, 8:24, 0].ravel().astype(np.float64)
        coef = np.linalg.lstsq(design, values, rcond=None)[0]
        return np.abs(design @ coef - values).max()

    assert max(residual(img) for img in corrupt(ramp, "elastic_transform", 1)) <= 1.5  # uint8 truncation
    assert min(residual(img) for img in corrupt(ramp, "elastic_transform", 4)) > 3


def test_contrast_is_each_channel_pulled_to_its_mean():
    x = SCENES[:4]
    for severity, c in zip(SEVERITIES, [.75, .5, .4, .3, .15]):
        unit = x / 255.0
        means = unit.mean(axis=(1, 2), keepdims=True)
        expected = _floor255((unit - means) * c + means)
        assert np.abs(corrupt(x, "contrast", severity).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("name, severity, change", [
    ("brightness", 1, lambda h, s, v: (h, s, min(v + .05, 1))),
    ("brightness", 5, lambda h, s, v: (h, s, min(v + .3, 1))),
    ("saturate", 2, lambda h, s, v: (h, min(s * .1, 1), v)),
    ("saturate", 5, lambda h, s, v: (h, min(s * 2.5 + .2, 1), v)),
])
def test_colour_corruptions_follow_their_hsv_formula(name, severity, change):
    x = np.concatenate([SCENES[:2], np.full((1, 32, 32, 3), 128, np.uint8),  # grey: hue 0, saturation 0
                        np.zeros((1, 32, 32, 3), np.uint8)])
    got = corrupt(x, name, severity)
    pixels = x.reshape(-1, 3) / 255.0
    expected = np.array([colorsys.hsv_to_rgb(*change(*colorsys.rgb_to_hsv(*p))) for p in pixels])
    assert np.abs(got.reshape(-1, 3).astype(int) - _floor255(expected)).max() <= 1


def test_gaussian_noise_has_the_published_standard_deviation():
    x = np.full((64, 32, 32, 3), 128, np.uint8)
    for severity, c in zip(SEVERITIES, [.04, .06, .08, .09, .10]):
        diff = corrupt(x, "gaussian_noise", severity).astype(np.float64) - 128
        # 196,608 draws: the sample s.d. is within 1 % of sigma; truncation to uint8 lowers the mean by ~0.5
        assert diff.std() == pytest.approx(255 * c, rel=0.01)
        assert diff.mean() == pytest.approx(-0.5, abs=0.15)


def test_shot_noise_is_poisson_with_c_photons_at_full_intensity():
    """Output ``floor(min(k / c, 1) * 255)`` with ``k ~ Poisson(x * c)``: its exact mean and variance from the pmf."""
    from scipy import stats

    x = np.full((64, 32, 32, 3), 102, np.uint8)
    for severity, c in zip(SEVERITIES, [500, 250, 100, 75, 50]):
        k = np.arange(4 * c)
        values, pmf = np.floor(np.minimum(k / c, 1) * 255), stats.poisson.pmf(k, 102 / 255 * c)
        mean = (pmf * values).sum()
        var = (pmf * (values - mean) ** 2).sum()
        out = corrupt(x, "shot_noise", severity).astype(np.float64)
        n = out.size
        assert abs(out.mean() - mean) < 5 * np.sqrt(var / n)
        assert abs(out.var() - var) < 5 * var * np.sqrt(2 / n)


def test_impulse_noise_replaces_a_fraction_c_with_black_or_white():
    x = np.full((64, 32, 32, 3), 100, np.uint8)
    for severity, c in zip(SEVERITIES, [.01, .02, .03, .05, .07]):
        out = corrupt(x, "impulse_noise", severity)
        assert set(np.unique(out).tolist()) == {0, 100, 255}
        assert (out != 100).mean() == pytest.approx(c, rel=0.08)
        assert (out == 255).sum() / (out != 100).sum() == pytest.approx(0.5, abs=0.03)


def _box_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Pillow's documented BOX filter from ``(n, n)`` to ``(size, size)``: shrinking, each source pixel counts,
    with equal weight, towards the one output pixel whose footprint holds its centre; enlarging, it is NEAREST."""
    n = image.shape[0]
    weights = np.zeros((size, n))
    if size < n:
        weights[np.floor((np.arange(n) + 0.5) * size / n).astype(int), np.arange(n)] = 1
    else:
        weights[np.arange(size), np.floor((np.arange(size) + 0.5) * n / size).astype(int)] = 1
    weights /= weights.sum(1, keepdims=True)
    return weights @ image @ weights.T


def test_pixelate_is_a_box_downsample_and_box_upsample():
    x = SCENES[:3]
    for severity, c in zip(SEVERITIES, [0.95, 0.9, 0.85, 0.75, 0.65]):
        got = corrupt(x, "pixelate", severity)
        for img, out in zip(x, got):
            for ch in range(3):
                small = np.rint(_box_resize(img[..., ch].astype(np.float64), int(32 * c)))
                assert np.abs(out[..., ch] - _box_resize(small, 32)).max() <= 1


def test_gaussian_blur_is_a_separable_gaussian_with_edges_repeated():
    x = SCENES[:3]
    for severity, sigma in zip(SEVERITIES, [.4, .6, .7, .8, 1]):
        radius = int(4 * sigma + 0.5)
        taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
        taps /= taps.sum()
        padded = np.pad(x / 255.0, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
        rows = sum(t * padded[:, k:k + 32] for k, t in enumerate(taps))
        expected = sum(t * rows[:, :, k:k + 32] for k, t in enumerate(taps))
        assert np.abs(corrupt(x, "gaussian_blur", severity).astype(int) - _floor255(expected)).max() <= 1


def test_defocus_blur_spreads_a_point_over_the_published_disk():
    dot = np.zeros((1, 32, 32, 3), np.uint8)
    dot[0, 16, 16] = 255
    # severity 5: radius 1.5 -> the 3x3 square, each 1/9; the anti-aliasing blur (sigma 0.1) is negligible
    out = corrupt(dot, "defocus_blur", 5)[0, ..., 0]
    assert np.array_equal(np.argwhere(out), np.argwhere(np.pad(np.ones((3, 3)), ((15, 14), (15, 14)))))
    assert set(out[15:18, 15:18].ravel().tolist()) == {int(255 / 9)}
    # severity 1: radius 0.3 -> the centre pixel only, blurred by OpenCV's 3-tap Gaussian of sigma 0.4
    g = np.exp(-np.array([1.0, 0, 1]) / (2 * 0.4 ** 2))
    g /= g.sum()
    out = corrupt(dot, "defocus_blur", 1)[0, 15:18, 15:18, 0]
    assert np.abs(out.astype(int) - np.floor(255 * np.outer(g, g))).max() <= 1


def test_motion_blur_streaks_a_point_along_a_line_within_45_degrees():
    dot = np.zeros((6, 32, 32, 3), np.uint8)
    dot[:, 16, 24] = 255
    for severity, (radius, sigma) in zip(SEVERITIES, [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]):
        weights = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma ** 2))
        for out in corrupt(dot, "motion_blur", severity, keys=range(6))[..., 0]:
            ys, xs = np.nonzero(out)
            # ImageMagick's kernel reads the pixels ahead along the angle: a point streaks backwards
            assert (xs <= 24).all() and (np.abs(ys - 16) <= 24 - xs + 1).all()
            assert (24 - xs).max() <= 2 * radius
            assert out[16, 24] == int(255 / weights.sum())
            assert out.sum() == pytest.approx(255, abs=len(xs))  # weights sum to 1, minus truncation


def _clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """The reference's clipped zoom of one ``(H, W, C)`` image, with scipy.ndimage.zoom."""
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out = ndimage.zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim:trim + h, trim:trim + h]


def test_zoom_blur_averages_the_reference_clipped_zooms():
    x = SCENES[:3]
    for severity, top in zip(SEVERITIES, [1.06, 1.11, 1.16, 1.21, 1.26]):
        factors = np.arange(1, top, 0.01)
        for img, out in zip(x, corrupt(x, "zoom_blur", severity)):
            unit = (img / 255.0).astype(np.float32)
            expected = (unit + sum(_clipped_zoom(unit, z) for z in factors)) / (len(factors) + 1)
            assert np.abs(out.astype(int) - _floor255(expected)).max() <= 1


def test_fog_adds_a_full_range_haze_then_rescales():
    x = np.full((4, 32, 32, 3), 150, np.uint8)
    for severity, c in zip(SEVERITIES, [.2, .5, .75, 1, 1.5]):
        out = corrupt(x, "fog", severity, keys=range(4)).astype(int)
        v = 150 / 255
        # the plasma fractal is normalised to [0, 1] over the 32 x 32 map: both ends are reached
        for img in out:
            assert abs(img.min() - int(v * v / (v + c) * 255)) <= 1
            assert abs(img.max() - int((v + c) * v / (v + c) * 255)) <= 1
        assert len(np.unique(out[0])) > 20  # a haze, not a constant


def test_jpeg_quality_falls_with_severity_and_blocks_appear():
    x = SCENES[:8]
    errors = [np.abs(corrupt(x, "jpeg_compression", s).astype(int) - x).mean() for s in SEVERITIES]
    assert all(a < b for a, b in zip(errors, errors[1:]))


def test_other_sizes_and_bad_arguments():
    big = np.repeat(np.repeat(SCENES[:2], 2, 1), 2, 2)  # 64 x 64: scaled kernels, fractal, elastic field
    for name in CORRUPTIONS:
        assert corrupt(big, name, 3).shape == big.shape
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(SCENES[:1], "snow", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(SCENES[:1], "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(SCENES[:1].astype(np.float32), "fog", 1)
