"""Device and precision selection, including the CUDA branches (exercised here without a GPU)."""
from __future__ import annotations

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
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        runtime.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.pick_device("auto").type == "cuda"


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
