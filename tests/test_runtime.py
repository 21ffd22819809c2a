"""Device and precision selection, including the CUDA branches (exercised here without a GPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer import runtime
from trainer.config import resolve
from trainer.models import create_model
from trainer.optim import build_optimizer
from trainer.train import Stepper


def test_cpu_bf16_only_when_the_processor_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.pick_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.pick_dtype("auto", cpu) is None
    assert runtime.pick_dtype("fp32", cpu) is None


def test_cuda_precision_choice(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.pick_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert runtime.pick_dtype("auto", cuda) is torch.float16


def test_device_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.pick_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.pick_device("cuda")
    for bad in ("gpu", "cuda:x", "meta"):
        with pytest.raises(ValueError, match=repr(bad)):
            runtime.pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="1 GPU"):
        runtime.pick_device("cuda:3")


@pytest.mark.parametrize("argv", [["xai-train", "--dataset", "digits", "--device", "cuda"],
                                  ["xai-dashboard", "precompute", "gradcam", "checkpoints/digits-demo",
                                   "--device", "cuda"],
                                  ["xai-dashboard", "precompute", "scoreboard", "checkpoints/digits-demo",
                                   "--device", "gpu"]])
def test_a_device_the_machine_lacks_is_one_line(argv, tmp_path):
    """A careless --device is refused in one line, exit status 2, before any run directory is touched."""
    import subprocess
    import sys

    if torch.cuda.is_available() and "cuda" in argv:
        pytest.skip("this machine has CUDA")
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    command = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]  # the installed command, as a user runs it
    if argv[0] == "xai-train":
        command += ["--out", str(out)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert ("CUDA is not available" in lines[0]) or ("unknown device 'gpu'" in lines[0])
    assert not out.exists()


def test_fp16_step_uses_a_grad_scaler_and_bf16_does_not():
    cfg = resolve("fast", batch_size=8)
    model = create_model("fast").to(memory_format=torch.channels_last)
    cpu = torch.device("cpu")
    assert Stepper(model, build_optimizer(model, cfg), cfg, cpu, torch.bfloat16).scaler is None
    fp16 = Stepper(model, build_optimizer(model, cfg), cfg, cpu, torch.float16)
    assert isinstance(fp16.scaler, torch.amp.GradScaler)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss, logits = fp16(x, y, torch.arange(8), 0, torch.Generator().manual_seed(0))
    assert logits.shape == (8, 10) and torch.isfinite(loss).all()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_momentum_is_adams_beta1(optimizer):
    """``--momentum`` is documented as "SGD momentum / Adam beta1": it must reach Adam's first-moment decay,
    and its default (0.9) must be torch's, so earlier Adam runs train as before."""
    model = create_model("simple_cnn")
    set_to = build_optimizer(model, resolve("digits", optimizer=optimizer, momentum=0.5))
    assert set_to.defaults["betas"] == (0.5, 0.999)
    default = build_optimizer(model, resolve("digits", optimizer=optimizer))
    assert default.defaults["betas"] == torch.optim.Adam(model.parameters()).defaults["betas"]
