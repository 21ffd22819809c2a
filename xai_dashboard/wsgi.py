"""WSGI entry for production: ``gunicorn -c python:xai_dashboard.gunicorn_conf -w 2 --preload -b 127.0.0.1:8050 xai_dashboard.wsgi:server``.

Configuration comes from the environment, read once when a worker imports this:
``XAI_RUNS`` (run directories or folders of runs separated by ``os.pathsep``; default:
:func:`.store.default_run_dirs`), ``XAI_DATA_DIR`` (the dataset folder) and ``XAI_IMAGE_ROOT``
(where moved image folders are now: :func:`trainer.sources.image_roots`). Debug stays
off unless ``XAI_DEBUG=1`` asks for Dash's dev tools (never in production).
With ``--preload`` the workers share the loaded test images copy-on-write.

Memory per worker under upload load is bounded by ``XAI_MAX_DECODE_MB`` (160)
for all its decodes together (at most ``XAI_MAX_DECODES``, 2, at once), returned to the
kernel when freed (:func:`.uploads.hand_back_freed_images`), plus the thumbnail
cache's ``XAI_THUMB_CACHE_MB`` (64): see :mod:`.uploads` and :mod:`.images`, and
``bench/upload_memory.py`` for the figures. Threads per worker: :mod:`.gunicorn_conf` (12), which
also gives the worker's attribution queue one place per thread (:mod:`.attribution_queue`).
"""
from __future__ import annotations

import os

import torch

from .app import create_app
from .uploads import hand_back_freed_images

# One intra-op thread per worker: several workers with a full thread pool each
# oversubscribe the cores and a 5 ms forward pass can take hundreds of ms.
torch.set_num_threads(int(os.environ.get("XAI_TORCH_THREADS", "1")))
hand_back_freed_images()  # a decoded upload's memory is returned when freed, whichever thread decoded it


def runs_from_env(value: str | None) -> list[str] | None:
    """``XAI_RUNS`` split on ``os.pathsep``, blanks dropped; None (= default runs) when unset or empty."""
    runs = [p for p in (value or "").split(os.pathsep) if p.strip()]
    return runs or None


app = create_app(runs_from_env(os.environ.get("XAI_RUNS")), os.environ.get("XAI_DATA_DIR") or None)
if os.environ.get("XAI_DEBUG") == "1":
    app.enable_dev_tools(debug=True)
server = app.server
