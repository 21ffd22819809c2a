"""Attributions on one low-priority thread per process, behind a queue bounded before work starts.

Why: a worker serves predictions (one forward pass, ~8 ms of CPU on ``cifar10-fast``) and
attributions (Grad-CAM ~15 ms, Integrated Gradients at 32 steps ~160 ms) from the same cores.
Computed on the request threads, an attribution gets the same CPU share as a prediction, so
every render in flight stretches the predictions arriving meanwhile (hardening issue #15: predict
p95 150 ms while IG ran). Here every attribution runs on the process's single attribution thread,
whose nice value is raised by ``$XAI_ATTRIBUTION_NICE`` (10). Linux applies nice per thread, and
the scheduler weighs a nice-10 thread at about a tenth of a nice-0 one, so a prediction arriving
mid-render gets the core almost at once; an idle machine still gives the render all of it.

One thread, because the worker runs torch with one intra-op thread (:mod:`.wsgi`): the render's
arithmetic then stays on this niced thread. (``torch.set_num_threads`` cannot be set per thread
here: it also changes the count every thread created later starts with, request threads included.
Two intra-op threads made a lone prediction's p95 worse on a busy 2-core machine, not better.)

Bounded: the request thread waits for its result, holding a server thread, so an attribution
is admitted only while fewer than ``$XAI_ATTRIBUTION_QUEUE`` (8) are admitted in this process
and the estimated seconds of those plus its own fit the request budget; otherwise it is refused
at once with 503 and a Retry-After of the estimated wait. An admitted request waits at most the
budget; past it the request gets 503, a render not yet started is dropped, and one already
started finishes (callers cache inside ``work``, so the retry finds the result).

gunicorn needs more threads than the queue has places (the README runs 12 for 8): the rest stay
free for predictions, which otherwise wait for a thread behind requests waiting on renders. On a
loaded 2-core machine, with 4 threads all waiting on renders a thumbnail's p95 was 2.1 s; with
12 threads and 8 places, 92 ms.
"""
from __future__ import annotations

import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TypeVar

from .explain_spec import ExplainError

NICE_ENV, DEFAULT_NICE = "XAI_ATTRIBUTION_NICE", 10
QUEUE_ENV, DEFAULT_QUEUE = "XAI_ATTRIBUTION_QUEUE", 8
T = TypeVar("T")


class Busy(ExplainError):
    """503: the attribution queue cannot serve this request in time; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message, 503)
        self.retry_after = max(1, math.ceil(retry_after))


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(os.environ.get(name, default))))
    except ValueError:
        return default


def lower_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (capped at 19); Linux only, where nice is
    per thread (elsewhere it would slow the whole process, predictions included, so nothing changes)."""
    if sys.platform.startswith("linux") and increment > 0:
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
        except OSError:  # a sandbox forbidding it: renders keep normal priority rather than failing
            pass


class AttributionQueue:
    """One niced thread running attributions in arrival order; admission decided before any work."""

    def __init__(self, nice: int = DEFAULT_NICE, max_admitted: int = DEFAULT_QUEUE):
        self.max_admitted = max_admitted
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="xai-attribution", initializer=lower_priority,
                                        initargs=(nice,))
        self._guard = threading.Lock()
        self._admitted = 0   # submitted and not finished (running or waiting)
        self._ahead = 0.0    # their estimated seconds

    def run(self, work: Callable[[], T], estimate: float, budget: float) -> T:
        """``work()`` on the attribution thread; its result, or :class:`Busy` (503).

        ``estimate``: the seconds ``work`` should take (:func:`.explain.check_budget`); ``budget``: the
        request's limit, both on admission (wait plus own estimate) and on the wait for the result.
        """
        with self._guard:
            if self._admitted >= self.max_admitted or self._ahead + estimate > budget:
                raise Busy(f"the server is busy: {self._admitted} explanations are ahead of this one (about "
                           f"{self._ahead:.0f} s of work); try again in a moment", self._ahead)
            self._admitted += 1
            self._ahead += estimate
        future = self._pool.submit(work)
        future.add_done_callback(lambda _f: self._release(estimate))  # also runs when cancelled
        try:
            return future.result(timeout=budget)
        except FutureTimeout:
            future.cancel()  # dropped if it has not started; a started render runs to its end
            raise Busy(f"the server is busy: this explanation did not finish within its {budget:.0f} s limit; "
                       "try again in a moment", estimate) from None

    def _release(self, estimate: float) -> None:
        with self._guard:
            self._admitted -= 1
            self._ahead = max(0.0, self._ahead - estimate)


_queue: AttributionQueue | None = None
_create = threading.Lock()


def attribution_queue() -> AttributionQueue:
    """This process's queue, created on first use (so in each gunicorn worker, after the fork)."""
    global _queue
    with _create:
        if _queue is None:
            _queue = AttributionQueue(_env_int(NICE_ENV, DEFAULT_NICE, 0, 19),
                                      _env_int(QUEUE_ENV, DEFAULT_QUEUE, 1, 64))
        return _queue


def _forget() -> None:
    """After a fork: the child has the parent's queue object but not its thread, so it builds its own."""
    global _queue, _create
    _queue, _create = None, threading.Lock()


os.register_at_fork(after_in_child=_forget)
