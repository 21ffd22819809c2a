"""gunicorn settings for the dashboard (the README's production command)::

    gunicorn -c python:xai_dashboard.gunicorn_conf -w 2 --preload -b 127.0.0.1:8050 xai_dashboard.wsgi:server

Threaded workers with :data:`.attribution_queue.SERVER_THREADS` (12) request threads each, and in
every worker, once it is forked and before it serves, the attribution queue gets one place per
thread the worker really runs (a ``--threads`` on the command line overrides the value here, and
the hook reads the result): the thread count is the one number admission is decided from, so a
request the worker has accepted is never refused for want of a place (:mod:`.attribution_queue`).
"""
from __future__ import annotations

from xai_dashboard.attribution_queue import SERVER_THREADS, serve_threads

worker_class = "gthread"
threads = SERVER_THREADS


def post_worker_init(worker) -> None:
    """gunicorn's hook, in each worker after the fork: size this process's attribution queue to its threads."""
    serve_threads(worker.cfg.threads)
