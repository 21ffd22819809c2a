"""Device and precision choice, distributed setup, and provenance.

Nothing here is assumed: bf16 on the CPU is used only when the processor
reports native bf16 instructions (AVX-512 BF16 or AMX), else fp32.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


def mallopt(*settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt(param, value)`` for each pair of ``settings``; whether all applied (False on
    other platforms and libcs, which keep their defaults)."""
    if sys.platform != "linux":
        return False
    try:
        call = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    return all([bool(call(param, value)) for param, value in settings])


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of handing it back to the kernel.

    Why: by default every block above the mmap threshold (at most 32 MB) gets its own ``mmap`` and is
    unmapped when freed, so each training step's activations (hundreds of MB at batch 2000) are
    page-faulted in afresh: ``/usr/bin/time`` counted 186 million minor faults and 417 s of system time
    in one 19-minute run of the fast (Muon) recipe, and the step ran at 374 instead of 517 images/s. With mmap off
    and trimming off, the heap keeps its pages (peak RSS 3.0 -> 3.6 GB in that measurement). Only for
    batch jobs in their own process (training, precomputation), never the web server, whose resident
    memory is budgeted (it does the opposite: :func:`xai_dashboard.uploads.hand_back_freed_images`).
    Returns whether it applied (glibc on Linux only).
    """
    return mallopt((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1))


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; ValueError, in words,
    for a device this machine lacks or a name torch does not know (a command-line value)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {requested!r} is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__} built without CUDA" if torch.version.cuda is None else "no GPU visible"
        raise ValueError(f"device {requested!r} asked for but CUDA is not available here ({build}); "
                         "use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {requested!r} asked for but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def pick_dtype(requested: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32."""
    if requested == "fp32":
        return None
    if requested == "bf16":
        return torch.bfloat16
    if requested == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Dist:
    """Distributed context: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str) -> tuple[Dist, torch.device]:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1): one process per GPU
    (``cuda:LOCAL_RANK``, nccl) when CUDA is available and not refused, else the CPU with gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    requested = pick_device(device_request)  # ValueError when CUDA is asked for but absent
    if world == 1:
        return Dist(), requested
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = requested.type == "cuda"  # any cuda[:N] request means "this process's GPU"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), torch.device(f"cuda:{local}" if use_cuda else "cpu")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            timeout=5, cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    import numpy

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    for mod in ("torchvision", "safetensors", "sklearn"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return v


def provenance(device: torch.device, dtype: torch.dtype | None) -> dict:
    return {
        "command": " ".join(["xai-train", *sys.argv[1:]]) if sys.argv else "",
        "git_commit": git_commit(), "versions": versions(), "host": platform.node(),
        "cpu_threads": torch.get_num_threads(), "device": str(device),
        "autocast": str(dtype).replace("torch.", "") if dtype else "fp32",
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
