"""Never lose a run: what ``--out`` may be, and the manifest of files the trainer wrote.

A run directory may hold files that are not the trainer's (notes, plots, the
dashboard's ``summary.json``). The trainer therefore refuses a non-empty
``--out`` unless told ``--overwrite`` or ``--resume``, lists every file it is
about to write in ``manifest.json`` *before* writing it (so a kill between the
two never leaves an unlisted file), and only ever deletes files on that list.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from trainer.rundir import write_json

MANIFEST = "manifest.json"


class OutDirRefused(ValueError):
    """``--out`` cannot be used as asked; the message says why and what to do instead."""


def check_out(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that would clobber something; writes nothing.

    Called before any data is loaded, so a wrong ``--out`` costs no training time.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutDirRefused(f"--out {out} is an existing file, not a directory; choose another --out")
    ancestor = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not ancestor.is_dir():
        raise OutDirRefused(f"--out {out}: {ancestor} is a file, so the run directory cannot be created there")
    if not os.access(ancestor, os.W_OK):
        raise OutDirRefused(f"--out {out}: {ancestor} is not writable")
    if resume or overwrite or not out.is_dir() or not any(out.iterdir()):
        return
    what = "a previous run" if (out / "meta.json").exists() or (out / MANIFEST).exists() else "files"
    raise OutDirRefused(
        f"--out {out} already holds {what}; nothing was changed. Pass --overwrite to replace the trainer's "
        f"files there (other files are kept), --resume {out} to continue a killed run, or choose another --out"
    )


def recorded(run_dir: Path) -> list[str]:
    """Paths (relative to ``run_dir``) the trainer has written there; [] when there is no manifest."""
    path = Path(run_dir) / MANIFEST
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [f for f in files if isinstance(f, str)]


def record(run_dir: Path, names: Iterable[str]) -> None:
    """Add ``names`` (relative paths) to the manifest; call it *before* writing those files."""
    files = recorded(run_dir)
    new = [n for n in names if n not in files]
    if new or not (Path(run_dir) / MANIFEST).exists():
        write_json(Path(run_dir) / MANIFEST, {"written_by": "xai-train", "files": files + new})


def remove_recorded(run_dir: Path, names: Iterable[str] | None = None) -> None:
    """Delete the trainer's files (all of them, or those of ``names`` that it recorded), then
    any folder that this leaves empty. Files the trainer did not record are never touched."""
    run_dir = Path(run_dir).resolve()
    files = recorded(run_dir)
    doomed = [f for f in files if names is None or f in set(names)]
    for name in doomed:
        path = (run_dir / name).resolve()
        if run_dir not in path.parents:  # a hand-edited manifest must not reach outside the run
            continue
        path.unlink(missing_ok=True)
        if path.parent != run_dir and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()
    write_json(run_dir / MANIFEST, {"written_by": "xai-train", "files": [f for f in files if f not in doomed]})
