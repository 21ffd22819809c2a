"""Knowledge distillation from a trained teacher run.

Loss per example::

    (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + beta * (1 - cos(P student_embedding, teacher_embedding))

The last (hidden-feature, cosine) term is optional; ``P`` is a learned linear
map from the student's embedding size to the teacher's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import TrainConfig
from trainer.rundir import load_run


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example soft-target KL ``(N,)``, scaled by T^2 so gradients keep their size."""
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    q = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p, q, reduction="none").sum(1) * t * t


def cosine_feature_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """``(N,)``: 1 - cosine similarity of the (projected) student and teacher embeddings."""
    return 1 - F.cosine_similarity(student_feat.float(), teacher_feat.float(), dim=1)


class Distiller(nn.Module):
    """Holds the frozen teacher and (for the cosine term) the student->teacher projection."""

    def __init__(self, cfg: TrainConfig, student: nn.Module, teacher: nn.Module, student_dim: int, teacher_dim: int):
        super().__init__()
        self.cfg = cfg
        self.student = [student]  # a list so the student's parameters are not registered twice
        self.teacher = [teacher.eval().requires_grad_(False)]
        self.proj = nn.Linear(student_dim, teacher_dim, bias=False) if cfg.distill_cosine else None

    @classmethod
    def from_config(cls, cfg: TrainConfig, student: nn.Module, ds, device: torch.device) -> "Distiller":
        run = load_run(cfg.teacher, check_predictions=False)
        if run.meta["dataset"]["name"] != ds.name or run.meta["num_classes"] != len(ds.classes):
            raise ValueError(f"teacher {cfg.teacher} was trained on {run.meta['dataset']['name']}, not {ds.name}")
        teacher = run.load_model(device=str(device))
        with torch.no_grad():
            probe = torch.zeros(1, ds.in_channels, ds.input_size, ds.input_size, device=device)
            s_dim = student.to(device).eval().embed(probe).shape[1]
            t_dim = teacher.embed(probe).shape[1]
        student.train()
        return cls(cfg, student, teacher, s_dim, t_dim).to(device)

    def loss(self, x: torch.Tensor, student_logits: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        """Combine the per-example hard loss ``(N,)`` with the distillation terms."""
        c = self.cfg
        with torch.no_grad():
            t_feat = self.teacher[0].embed(x)
            t_logits = self.teacher[0].head(t_feat)
        total = (1 - c.distill_alpha) * hard + c.distill_alpha * kd_loss(student_logits, t_logits, c.distill_temperature)
        if self.proj is not None:
            # A second embed pass on the student is cheap next to the teacher's forward.
            s_feat = self.student[0].embed(x)
            total = total + c.distill_cosine * cosine_feature_loss(self.proj(s_feat.float()), t_feat)
        return total
