"""Per-epoch resume state, written atomically inside ``RUN_DIR/checkpoint/``.

Tensors (model, optimiser buffers, weight average, best weights) go to
``state.safetensors``; everything else (epoch, history, scheduler, optimiser
hyper-parameters) to ``state.json``. Nothing is pickled, so a resume never
executes code from disk. Random streams need no saving: every epoch reseeds
from ``(seed, epoch)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainer import outdir
from trainer.rundir import atomic_write, write_json

STATE_DIR = "checkpoint"
FILES = (f"{STATE_DIR}/state.safetensors", f"{STATE_DIR}/state.json")


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, entries in opt_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split("/", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_state(run_dir: Path, *, model, optimizer, extra_tensors: dict[str, dict[str, torch.Tensor]],
               info: dict) -> None:
    """``extra_tensors``: named groups of tensors (e.g. ``{"ema": {...}, "best": {...}}``)."""
    from safetensors.torch import save

    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_info = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    for group, values in extra_tensors.items():
        tensors.update({f"{group}/{k}": v for k, v in values.items()})
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    d = Path(run_dir) / STATE_DIR
    outdir.record(run_dir, FILES)
    atomic_write(d / "state.safetensors", lambda f: f.write(blob))
    # The JSON is written last: its presence marks a complete checkpoint.
    write_json(d / "state.json", {**info, "optimizer": opt_info})


def load_state(run_dir: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict, dict]:
    """Returns (tensor groups, info, optimizer state dict)."""
    from safetensors.torch import load_file

    d = Path(run_dir) / STATE_DIR
    if not (d / "state.json").is_file():
        raise FileNotFoundError(f"{d}/state.json: no checkpoint to resume from")
    info = json.loads((d / "state.json").read_text())
    tensors = load_file(d / "state.safetensors")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        group, key = name.split("/", 1)
        if group != "optim":
            groups.setdefault(group, {})[key] = value
    return groups, info, _unflatten_optimizer(tensors, info.pop("optimizer"))


def clear_state(run_dir: Path) -> None:
    """Delete the trainer's own checkpoint files; the folder goes only if nothing else is in it."""
    outdir.remove_recorded(run_dir, FILES)
