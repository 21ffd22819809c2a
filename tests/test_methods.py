"""The attribution-method registry: every method on a small ReLU and a small GELU network, guided
backpropagation against a hand computation and refused where it is undefined, and the limits
the page and the API derive from the registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.test_gradcam_reference import reference_gradcam
from xai_dashboard import explain
from xai_dashboard.explain_spec import ExplainError, Settings
from xai_dashboard.methods import MAX_OCCLUSION_PASSES, METHODS, all_params

CHEAP = {"integrated_gradients": {"ig_steps": 8}, "occlusion": {"window": 4, "stride": 2}}


class Small(nn.Module):
    """x (N, 3, 8, 8) -> conv 3x3 -> act -> maxpool 2 -> conv 3x3 ("conv2", (N, 6, 4, 4)) -> act
    -> spatial mean -> linear (4 classes); ``act`` a fresh module at each use."""

    def __init__(self, act: type[nn.Module] = nn.ReLU, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():  # fixed weights, without touching the global generator
            torch.manual_seed(seed)
            self.conv1, self.act1 = nn.Conv2d(3, 5, 3, padding=1), act()
            self.conv2, self.act2 = nn.Conv2d(5, 6, 3, padding=1), act()
            self.head = nn.Linear(6, 4)

    def forward(self, x):
        h = F.max_pool2d(self.act1(self.conv1(x)), 2)
        return self.head(self.act2(self.conv2(h)).mean((2, 3)))


META = {"input_size": 8, "gradcam_layer": "conv2", "layers": [{"name": "conv2", "shape": [6, 4, 4]}]}


def _inputs(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("act", [nn.ReLU, nn.GELU], ids=["relu", "gelu"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_registered_method(method, act):
    model = Small(act).eval()
    x, target = _inputs().repeat(4, 1, 1, 1), torch.arange(4).repeat_interleave(3)  # 3 images x 4 classes
    settings = Settings(method, **CHEAP.get(method, {})).resolved(META)
    reason = explain.unavailable_reason(model, x, method)
    if reason:  # only guided methods on the GELU net, refused with the reason
        assert METHODS[method].requires and act is nn.GELU and "GELU" in reason
        with pytest.raises(ExplainError, match="GELU") as e:
            explain.attribute(model, x, target, settings)
        assert e.value.status == 400
    else:
        maps = explain.attribute(model, x, target, settings)
        assert maps.shape == (12, 8, 8) and maps.dtype == np.float32 and np.isfinite(maps).all()
        peaks = maps.max((1, 2))  # each map divided by its peak; all zero when there is no positive evidence
        assert maps.min() >= 0 and all(np.isclose(p, 1.0) or p == 0 for p in peaks) and peaks.max() == 1
    assert explain.hook_count(model) == 0


# ------------------------------------------------------------------ guided backpropagation by hand

class GuidedReLU(torch.autograd.Function):
    """Springenberg et al. (2015): forward ReLU; backward keeps a gradient only where both the
    forward input and the incoming gradient are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def hand_guided_gradcam(model: Small, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Selvaraju et al. (2017), Section 3: guided backprop x bilinearly upsampled Grad-CAM,
    then |.| summed over colour channels and divided by the peak (the dashboard's display)."""
    xx = x.clone().requires_grad_(True)
    h = F.max_pool2d(GuidedReLU.apply(model.conv1(xx)), 2)
    y = model.head(GuidedReLU.apply(model.conv2(h)).mean((2, 3)))
    y.gather(1, target.view(-1, 1)).sum().backward()
    guided = xx.grad.double()                                              # (N, 3, 8, 8)
    cam = torch.as_tensor(reference_gradcam(model, "conv2", x, target))    # (N, 8, 8)
    maps = (guided * cam[:, None]).abs().sum(1)
    return (maps / maps.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)).numpy()  # an all-zero map stays 0


def test_guided_gradcam_on_relu_matches_hand_computation():
    model = Small(nn.ReLU).eval()
    x, target = _inputs(4), torch.tensor([0, 1, 2, 3])
    got = explain.attribute(model, x, target, Settings("guided_gradcam").resolved(META))
    np.testing.assert_allclose(got, hand_guided_gradcam(model, x, target), atol=1e-5)
    # and it is not the plain gradient: guiding changed something
    xx = x.clone().requires_grad_(True)
    model(xx).gather(1, target.view(-1, 1)).sum().backward()
    cam = torch.as_tensor(reference_gradcam(model, "conv2", x, target))
    plain = (xx.grad.double() * cam[:, None]).abs().sum(1)
    plain = (plain / plain.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)).numpy()
    assert np.abs(got - plain).max() > 0.05


class ReusedReLU(Small):
    def forward(self, x):  # one ReLU module applied twice, as torchvision's ResNet blocks do
        h = F.max_pool2d(self.act1(self.conv1(x)), 2)
        return self.head(self.act1(self.conv2(h)).mean((2, 3)))


class FunctionalReLU(Small):
    def forward(self, x):  # F.relu cannot be hooked: Captum would pass the plain gradient through it
        h = F.max_pool2d(self.act1(self.conv1(x)), 2)
        return self.head(F.relu(self.conv2(h)).mean((2, 3)))


class FunctionalGELU(Small):
    def forward(self, x):
        h = F.max_pool2d(self.act1(self.conv1(x)), 2)
        return self.head(F.gelu(self.conv2(h)).mean((2, 3)))


@pytest.mark.parametrize("make,words", [
    (lambda: Small(nn.GELU), "uses GELU"), (lambda: Small(nn.SiLU), "uses SiLU"),
    (lambda: Small(nn.Hardswish), "uses Hardswish"), (ReusedReLU, "'act1' is applied 2 times"),
    (FunctionalReLU, "ReLU as a function"), (FunctionalGELU, "calls gelu"),
], ids=["gelu", "silu", "hardswish", "reused", "functional-relu", "functional-gelu"])
def test_guided_gradcam_refused_where_undefined(make, words):
    model = make().eval()
    reason = explain.unavailable_reason(model, _inputs(1), "guided_gradcam")
    assert reason and "defined for ReLU networks only" in reason and words in reason, reason
    with pytest.raises(ExplainError, match="not available for this run"):
        explain.attribute(model, _inputs(1), 0, Settings("guided_gradcam").resolved(META))
    assert explain.hook_count(model) == 0


def test_guided_availability_across_the_zoo():
    from trainer.models import create_model

    x = torch.zeros(1, 3, 32, 32)
    for name, supported in [("lenet5", True), ("simple_cnn", True), ("resnet18", True), ("fast", False),
                            ("mobilenet_v3_small", False)]:
        reason = explain.unavailable_reason(create_model(name).eval(), x, "guided_gradcam")
        assert (reason is None) == supported, (name, reason)


# ------------------------------------------------------------------ limits derived from the registry

def test_parameter_limits_in_settings_api_and_page():
    from werkzeug.datastructures import MultiDict

    from xai_dashboard.api import settings_from_form
    from xai_dashboard.views.explain_controls import method_parameters

    meta = {**META, "input_size": 32}
    ig = METHODS["integrated_gradients"]
    steps = next(p for p in ig.params if p.name == "ig_steps")
    assert (steps.lo, steps.hi) == (2, 256)
    assert settings_from_form(MultiDict({"method": ig.name, "steps": "256"}), meta).params["ig_steps"] == 256
    for bad in ("1", "257", "512"):
        with pytest.raises(ExplainError, match=r"ig_steps must be an integer in \[2, 256\]"):
            settings_from_form(MultiDict({"method": ig.name, "steps": bad}), meta)
    # the page's inputs carry the same limits and defaults
    inputs = {c.children[1].id: c.children[1] for c in method_parameters().children[1].children}
    for p in (p for p in all_params().values() if p.in_page):
        box = inputs[f"xp-param-{p.name}"]
        assert (box.min, box.max, box.value) == (p.lo, p.hi, p.default)
    assert "xp-param-internal_batch_size" not in inputs  # API only


def test_occlusion_limits():
    small, big = {**META, "input_size": 32}, {**META, "input_size": 224}
    assert Settings("occlusion", window=1, stride=1).resolved(small).params["window"] == 1  # 1,024 passes
    with pytest.raises(ExplainError, match=f"50176 forward passes; the limit is {MAX_OCCLUSION_PASSES}"):
        Settings("occlusion", window=1, stride=1).resolved(big)
    with pytest.raises(ExplainError, match="2809 forward passes.*use stride >= 7"):
        Settings("occlusion", window=16, stride=4).resolved(big)   # 53^2 passes; stride 7: 30^2, stride 6: 35^2
    with pytest.raises(ExplainError, match="stride 8 is larger than window 4"):
        Settings("occlusion", window=4, stride=8).resolved(small)
    with pytest.raises(ExplainError, match="larger than the 32 px input"):
        Settings("occlusion", window=40, stride=4).resolved(small)


def test_registry_entries_resolve():
    for name, method in METHODS.items():
        assert method.name == name and callable(method.function())
        assert method.requirement() is None or callable(method.requirement())
        for p in method.params:
            assert p.lo <= p.default <= p.hi
        Settings(name).resolved({**META, "input_size": 32})  # the defaults are valid
