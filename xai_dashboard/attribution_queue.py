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

Admission, one number: the server's request threads. A request waits on its thread for its render,
so a process can never have more attributions in flight than it has request threads, and the queue
has exactly that many places: gunicorn's ``threads`` (:mod:`.gunicorn_conf` sets it to
:data:`SERVER_THREADS` and, in each worker, passes the count the worker really runs, a command-line
``--threads`` included, to :func:`serve_threads`), or :data:`SERVER_THREADS` in any other server
(the development server starts a thread per request, so there the places are a real cap). Every
request a gunicorn worker has accepted therefore finds a place, and whether it is served is decided
by time alone, before any work: its estimate plus the estimates of the work admitted ahead of it
(:func:`.explain.check_budget`: the registry's passes x the measured cost of one) must fit the
request budget, or it is refused at once with 503, a sentence saying how much work is ahead, and a
Retry-After of that wait. Admitted work fits the budget by construction; waiting is still capped at
the budget, for a machine slower than its estimates: past it the request gets 503, a render not yet
started is dropped, and one already started finishes (callers cache inside ``work``, so the retry
finds the result).

Before, the queue had 8 places for gunicorn's 12 threads (two constants, so that 4 threads stayed
free for predictions): at a peak of 9 attributions in one worker the 9th was refused with 503
although it would have been served well within its budget (issue #15's load test, one 503 in two
minutes). Predictions still never wait behind an attribution for the model or the CPU: they use
their own never-hooked copy at normal priority. Renders can take every thread of a worker, and a
prediction then waits for one, but that wait is bounded too: the work admitted ahead never exceeds
the budget, and each finished render frees a request thread. Such moments are rare: more than 8
renders in one worker happened once in the two-minute load test, which is why 12 threads rather than
4 (with 4, all waiting on renders on a loaded 2-core machine, a thumbnail's p95 was 2.1 s; with 12,
92 ms).
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
import weakref
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TypeVar

from .explain_spec import ExplainError

NICE_ENV, DEFAULT_NICE = "XAI_ATTRIBUTION_NICE", 10
# Request threads per server process: gunicorn's ``threads`` (:mod:`.gunicorn_conf`) and the queue's places.
SERVER_THREADS = 12
IDLE_WAKE_S = 1.0  # how often an idle attribution thread wakes (why: AttributionQueue._serve)
INTERRUPTED = "the server is busy: the explanation was interrupted; try again"
T = TypeVar("T")
_instances: weakref.WeakSet = weakref.WeakSet()  # every queue, reset in a forked child


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
    """One niced thread running attributions in arrival order; admission decided before any work.

    Self-healing (hardening issue #15): a job's exception goes to its caller and the thread carries on;
    a thread that stops anyway (a stop request delivered to it, as dash's test runner sends every thread
    it saw start) hands its waiting jobs to a successor, and the next :meth:`run` starts one if none is
    alive. In a forked child (gunicorn's workers) every queue starts afresh (:func:`_after_fork`).
    """

    def __init__(self, nice: int = DEFAULT_NICE, places: int = SERVER_THREADS):
        self.places, self._nice = places, nice  # places: at most this many admitted at once (module docstring)
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        """No thread, nothing admitted, new locks (at creation, and in a forked child)."""
        self._guard = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (Future, work) in arrival order
        self._thread: threading.Thread | None = None
        self._admitted = 0   # submitted and not finished (running or waiting)
        self._ahead = 0.0    # their estimated seconds

    def run(self, work: Callable[[], T], estimate: float, budget: float) -> T:
        """``work()`` on the attribution thread; its result, or :class:`Busy` (503).

        ``estimate``: the seconds ``work`` should take (:func:`.explain.check_budget`); ``budget``: the
        request's limit, both on admission (wait plus own estimate) and on the wait for the result.
        """
        future: Future = Future()
        future.add_done_callback(lambda _f: self._release(estimate))  # also runs when cancelled
        with self._guard:
            if self._admitted >= self.places or self._ahead + estimate > budget:
                raise Busy(f"the server is busy: {self._admitted} explanations are ahead of this one (about "
                           f"{self._ahead:.0f} s of work); try again in a moment", self._ahead)
            self._admitted += 1
            self._ahead += estimate
            self._jobs.put((future, work))
            self._ensure_thread()
        try:
            return future.result(timeout=budget)
        except FutureTimeout:
            future.cancel()  # dropped if it has not started; a started render runs to its end
            raise Busy(f"the server is busy: this explanation did not finish within its {budget:.0f} s limit; "
                       "try again in a moment", estimate) from None

    def _ensure_thread(self) -> None:
        """Start a thread for the queue unless a live one serves it. The caller holds ``_guard``, so
        concurrent callers finding the thread dead start one successor, not one each."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name="xai-attribution",
                                            daemon=True)  # never holds up the interpreter's exit
            self._thread.start()

    def _serve(self, jobs: queue.SimpleQueue) -> None:
        """The thread: jobs one at a time until a stop request (SystemExit, KeyboardInterrupt) ends it; then
        its job's caller gets a 503 to retry (never the stop request, which would end the server thread
        waiting on it), and a successor starts if jobs still wait."""
        lower_priority(self._nice)
        taken: list[Future] = []
        try:
            # In a call, so that a stop raised anywhere in the loop reaches the handlers below (raised at a
            # loop's backward jump, CPython 3.11 reports it from outside this frame's try).
            _take_jobs(jobs, taken)
        except SystemExit:
            pass  # a stop request: the thread ends without a traceback, as threading's own excepthook has it
        finally:
            if taken and not taken[-1].done():  # taken, not finished: the stop landed in it
                with contextlib.suppress(InvalidStateError):  # its caller cancelled it meanwhile
                    taken[-1].set_exception(Busy(INTERRUPTED, 1))
            with self._guard:
                if self._thread is threading.current_thread():  # not replaced already (or reset by a fork)
                    self._thread = None
                    if not jobs.empty():  # admitted callers are waiting: do not leave them to their budget
                        self._ensure_thread()

    def _release(self, estimate: float) -> None:
        with self._guard:
            self._admitted -= 1
            self._ahead = max(0.0, self._ahead - estimate)


def _take_jobs(jobs: queue.SimpleQueue, taken: list[Future]) -> None:
    """Run ``jobs``' ``(future, work)`` one at a time, for ever; ``taken[-1]``: the one taken last."""
    while True:
        try:
            future, work = jobs.get(timeout=IDLE_WAKE_S)
        except queue.Empty:
            # A stop sent to this thread (PyThreadState_SetAsyncExc) is raised only when it runs Python
            # code: waking while idle lets it land here, holding no job.
            continue
        taken[:] = [future]
        _run_job(future, work)


def _run_job(future: Future, work: Callable[[], T]) -> None:
    """``work()`` into ``future``: its result, or its exception for the caller to raise (the thread goes on)."""
    if not future.set_running_or_notify_cancel():
        return  # its caller stopped waiting
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - the caller's to handle
        future.set_exception(exc)
    else:
        future.set_result(result)


_queue: AttributionQueue | None = None
_places = SERVER_THREADS  # this process's request threads: set once, by serve_threads, before any request
_create = threading.Lock()


def attribution_queue() -> AttributionQueue:
    """This process's queue, created on first use (so in each gunicorn worker, after the fork)."""
    global _queue
    with _create:
        if _queue is None:
            _queue = AttributionQueue(_env_int(NICE_ENV, DEFAULT_NICE, 0, 19), _places)
        return _queue


def serve_threads(threads: int) -> None:
    """This process serves requests on ``threads`` threads, so its queue has that many places (gunicorn's
    ``post_worker_init`` in :mod:`.gunicorn_conf` calls it in each worker, after the fork, before any request)."""
    global _places
    with _create:
        _places = max(1, int(threads))
        if _queue is not None:
            _queue.places = _places


def _forget() -> None:
    """Drop this process's queue; the next :func:`attribution_queue` builds a new one (after a fork, and in
    the tests after dash_duo sent its stop to every thread it saw start, this queue's included)."""
    global _queue, _create
    _queue, _create = None, threading.Lock()


def _after_fork() -> None:
    """In a forked child (gunicorn's workers, ``os.fork``): the parent's attribution thread does not exist
    here, its locks may be held by threads that do not either, and its counts are of its own requests.
    Every queue, the process's and any a caller kept, starts afresh; the next run starts its thread."""
    for q in list(_instances):
        q._reset()
    _forget()


os.register_at_fork(after_in_child=_after_fork)
