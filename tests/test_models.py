"""Contract tests for every model in the zoo (parametrised over the registry).

Each model must map ``(N, C, 32, 32)`` to finite logits ``(N, num_classes)``
through ``head(embed(x))``, name an existing Grad-CAM layer with a spatial
output, and list inspectable layers that ``layer_shapes`` can probe.
"""
from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torch import nn

from trainer.models import (
    UnknownModelError, ZooModel, create_model, get_spec, layer_shapes, list_models,
)

ALL_MODELS = list_models()
TRANSFER = [n for n in ALL_MODELS if get_spec(n).builder.__module__ == "trainer.models.transfer"]
NOT_TRANSFER = [n for n in ALL_MODELS if n not in TRANSFER]
NO_SPATIAL_LAYER = {"mlp"}  # no convolution, so no 4-D Grad-CAM map

_built: dict[str, ZooModel] = {}


def _model(name: str) -> ZooModel:
    """One 3-channel, 10-class model per name, shared by the tests (eval mode)."""
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = create_model(name, num_classes=10, in_channels=3).eval()
    return _built[name]


def test_registry_has_the_zoo():
    expected = {
        "mlp", "lenet5", "simple_cnn", "optimized_cnn", "light_cnn", "deep_cnn",
        "vgg11", "resnet18", "mobilenet_v3_small", "efficientnet_b0", "resnet50",
    }
    assert expected <= set(ALL_MODELS)
    assert set(TRANSFER) == {"mobilenet_v3_small", "efficientnet_b0", "resnet50"}
    for name in ALL_MODELS:
        assert get_spec(name).description, f"{name} has no description"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_embed_and_gradcam_layer(name):
    model = _model(name)
    assert isinstance(model.head, nn.Module)
    x = torch.randn(2, 3, 32, 32)
    cam_layer = model.get_submodule(model.gradcam_layer)
    seen = {}

    def record(_module, _inputs, out):
        seen["shape"] = out.shape  # returns None, so the output is left as is

    handle = cam_layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            logits = model(x)
            feats = model.embed(x)
            from_head = model.head(feats)
    finally:
        handle.remove()

    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert feats.ndim == 2 and feats.shape[0] == 2 and feats.shape[1] > 0
    torch.testing.assert_close(from_head, logits)
    if name in NO_SPATIAL_LAYER:
        assert len(seen["shape"]) == 2
    else:
        assert len(seen["shape"]) == 4, f"{model.gradcam_layer} output is {tuple(seen['shape'])}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_inspect_layers(name):
    model = _model(name)
    names = list(model.inspect_layers)
    assert 3 <= len(names) <= 8
    assert len(set(names)) == len(names)
    shapes = layer_shapes(model, 3, 32)
    expected = names + ([] if model.gradcam_layer in names else [model.gradcam_layer])
    assert [n for n, _ in shapes] == expected
    assert all(all(d > 0 for d in shape) for _, shape in shapes)
    assert not model.training  # layer_shapes restores the mode


@pytest.mark.parametrize("name", NOT_TRANSFER)
def test_single_channel_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 4)
    assert torch.isfinite(out).all()


def test_train_mode_step_small_models():
    # A backward pass catches in-place ops and detached heads that eval-mode
    # forwards cannot; the small models keep this cheap.
    for name in ("mlp", "lenet5", "light_cnn", "resnet18"):
        model = create_model(name, num_classes=10, in_channels=3).train()
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert all(p.grad is not None for p in model.head.parameters()), name


def test_mlp_input_size():
    model = create_model("mlp", in_channels=1, input_size=28).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="input_size=28"):
        model(torch.randn(2, 1, 32, 32))


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        create_model("nope")
    msg = str(info.value)
    assert "nope" in msg and "resnet18" in msg and "mlp" in msg


def test_transfer_single_channel_random_init():
    model = create_model("mobilenet_v3_small", num_classes=3, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def _offline(*_args, **_kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("name", TRANSFER)
def test_pretrained_offline_raises_clear_error(name, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(RuntimeError) as info:
        create_model(name, num_classes=10, pretrained=True)
    msg = str(info.value)
    assert "offline" in msg and "--pretrained" in msg and torch.hub.get_dir() in msg
    assert "\n" not in msg


def test_pretrained_first_conv_adapted_from_rgb(monkeypatch):
    # Serve a fixed "ImageNet" state dict without any network access.
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v3_small().state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: source)
    model = create_model("mobilenet_v3_small", num_classes=10, in_channels=1, pretrained=True)
    rgb = source["features.0.0.weight"]
    torch.testing.assert_close(model.features[0][0].weight, rgb.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.features[1].block[0][0].weight, source["features.1.block.0.0.weight"])
