"""Attributions run on one low-priority thread per process behind a bounded queue (hardening issue #15's
load target, :mod:`xai_dashboard.attribution_queue`): the thread's nice value, 503 with Retry-After when
the queue is full or the wait would pass the budget, one place for each request thread of a gunicorn
worker, predictions served while attributions hold the thread, and the queue healing itself after a
job raised, its thread was stopped, or the process forked. On the shipped digits demo, which needs no
external data."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from test_api import client, png_of, post  # noqa: F401 - client is a fixture

from xai_dashboard import attribution_queue as aq
from xai_dashboard import explain
from xai_dashboard.cache import explain_cache
from xai_dashboard.explain_spec import ExplainError, Settings, cache_key, image_digest


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.fixture
def queue(monkeypatch):
    """A fresh process queue with two places; ``queue.release`` frees what :func:`occupy` put in it."""
    q = aq.AttributionQueue(nice=10, places=2)
    q.release = threading.Event()
    monkeypatch.setattr(aq, "_queue", q)
    yield q
    q.release.set()


def occupy(q, n: int, estimate: float = 0.0) -> None:
    """Admit ``n`` works that block until ``q.release``, each from its own request thread."""
    for _ in range(n):
        threading.Thread(target=q.run, args=(lambda: q.release.wait(60), estimate, 120.0), daemon=True).start()
    wait_until(lambda: q._admitted == n)  # admission happens on those threads


def wait_until(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux only")
def test_attributions_run_niced_and_request_threads_keep_their_priority(demo_store):
    own = nice_of_this_thread()
    if own >= 19:
        pytest.skip("the test process already runs at the lowest priority")
    seen = explain.on_attribution_thread(demo_store.get(None), lambda _model: nice_of_this_thread(), 0.0)
    assert seen == min(19, own + aq.DEFAULT_NICE)
    assert nice_of_this_thread() == own


def test_full_queue_answers_503_with_retry_after_before_any_work(client, demo_store, queue, monkeypatch):  # noqa: F811
    occupy(queue, 2, estimate=2.2)  # 4.4 s of work ahead
    started = []
    monkeypatch.setattr(explain, "attribute", lambda *a, **k: started.append(1))
    r = post(client, "/api/explain", png_of(demo_store.get(None).images[10]), method="saliency", format="json")
    assert r.status_code == 503 and "busy" in r.get_json()["error"]
    assert r.headers["Retry-After"] == "5" and not started


def test_work_that_would_wait_past_the_budget_is_refused_at_once(queue):
    occupy(queue, 1, estimate=0.8)
    ran, t0 = [], time.perf_counter()
    with pytest.raises(aq.Busy) as e:
        queue.run(lambda: ran.append(1), 0.5, 1.0)  # one place free, but 0.8 + 0.5 s > 1 s
    assert time.perf_counter() - t0 < 0.5 and e.value.status == 503 and e.value.retry_after == 1
    queue.release.set()
    wait_until(lambda: queue._admitted == 0)
    assert queue.run(lambda: ran.append(1) or "ran", 0.5, 1.0) == "ran" and ran == [1]  # free again


def test_prediction_is_served_while_attributions_hold_the_thread(client, demo_store, queue):  # noqa: F811
    occupy(queue, 2)
    run = demo_store.get(None)
    t0 = time.perf_counter()
    r = post(client, "/api/predict", png_of(run.images[11]))
    assert r.status_code == 200 and r.get_json()["index"] == int(run.preds[11])
    assert time.perf_counter() - t0 < 10 and queue._admitted == 2  # served, and the attributions still wait


def test_past_the_budget_a_queued_render_is_dropped_and_a_started_one_cached(demo_store, queue, monkeypatch,
                                                                              tmp_path):
    run, cache, settings = demo_store.get(None), explain_cache(tmp_path / "c"), Settings("saliency")
    monkeypatch.setenv(explain.BUDGET_ENV, "0.3")
    images = run.images[12], run.images[13]
    keys = [cache_key(run.meta, settings.resolved(run.meta), 0, image_digest(im)) for im in images]
    with run.lock:  # the first render starts, then waits for the model
        for image in images:  # the second is queued behind it
            with pytest.raises(ExplainError) as e:
                explain.explain_image(run, image, 0, settings, cache)
            assert e.value.status == 503 and "did not finish" in str(e.value)
    wait_until(lambda: queue._admitted == 0)  # the started render runs to its end once the model is free
    assert keys[0] in cache and keys[1] not in cache


# One place per request thread (hardening issue #15's load test): gunicorn's thread count is the one number
# admission is decided from, so a request a worker has accepted is refused for its time only, never for a place.

def gunicorn_settings(*overrides: tuple[str, object]):
    """gunicorn's configuration as the README's command builds it: :mod:`xai_dashboard.gunicorn_conf`, then
    ``overrides`` ``(name, value)`` set after the file, as gunicorn applies its command line."""
    from gunicorn.app.base import Application

    class Settings(Application):
        def init(self, parser, opts, args):
            raise AssertionError("no command line here")

        def load_config(self):
            self.load_config_from_module_name_or_filename("python:xai_dashboard.gunicorn_conf")
            for name, value in overrides:
                self.cfg.set(name, value)

        def load(self):
            raise AssertionError("configuration only, nothing is served")

    return Settings().cfg


def start_worker(cfg) -> None:
    """What gunicorn does in each worker after the fork, before it serves: its ``post_worker_init`` hook."""
    cfg.post_worker_init(SimpleNamespace(cfg=cfg))


@pytest.fixture
def worker_queue(monkeypatch):
    """This process's queue and thread count, put back after the test; the test starts from no queue."""
    monkeypatch.setattr(aq, "_queue", None)
    monkeypatch.setattr(aq, "_places", aq._places)


def test_a_worker_queue_has_one_place_per_thread_the_worker_runs(worker_queue):
    cfg = gunicorn_settings()
    assert cfg.worker_class_str == "gthread" and cfg.threads == aq.SERVER_THREADS
    start_worker(cfg)
    assert aq.attribution_queue().places == aq.SERVER_THREADS
    wider = gunicorn_settings(("threads", 20))  # `--threads 20` on the command line wins over the file
    start_worker(wider)
    assert aq.attribution_queue().places == 20


def test_every_thread_of_a_worker_waiting_on_integrated_gradients_gets_200(client, demo_store,  # noqa: F811
                                                                           worker_queue):
    cfg = gunicorn_settings()
    start_worker(cfg)
    run, threads, q = demo_store.get(None), cfg.threads, aq.attribution_queue()

    def ask(i: int):  # a client per thread: the requests run concurrently, as on a worker's threads
        return post(client.application.test_client(), "/api/explain", png_of(run.images[40 + i]),
                    method="integrated_gradients", steps="32", format="json")

    with ThreadPoolExecutor(threads) as pool:
        with run.lock:  # the first render waits for the model, so every request is in the queue at once
            answers = [pool.submit(ask, i) for i in range(threads)]
            wait_until(lambda: q._admitted + sum(a.done() for a in answers) == threads)
            refused = [a.result().get_json()["error"] for a in answers if a.done()]
            assert q._admitted == threads and refused == []  # 8 places for 12 threads refused 4 here
            r = post(client, "/api/predict", png_of(run.images[39]))  # and a prediction is still served
            assert r.status_code == 200 and r.get_json()["index"] == int(run.preds[39])
        statuses = [a.result(60).status_code for a in answers]
    assert statuses == [200] * threads
    wait_until(lambda: q._admitted == 0 and q._ahead == 0.0)

# Self-healing (hardening issue #15): a job's exception, a stop request sent to the thread, and a fork must
# never leave later attributions waiting on a thread that no longer runs.

def stop_thread(thread: threading.Thread) -> None:
    """What dash_duo does to every thread started during a browser test: raise SystemExit in it."""
    assert ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                      ctypes.py_object(SystemExit)) == 1


def outcome(q, work, budget: float = 10.0):
    """``q.run(work)``'s result, or what it raised, even a BaseException (the caller must never get one)."""
    try:
        return q.run(work, 0.0, budget)
    except BaseException as e:  # noqa: BLE001 - the point is to see it
        return e


def test_a_job_that_raises_reaches_its_caller_and_the_same_thread_serves_the_next(queue):
    def fails():
        raise ValueError("bad map")

    first = queue.run(threading.current_thread, 0.0, 5.0)
    with pytest.raises(ValueError, match="bad map"):
        queue.run(fails, 0.0, 5.0)
    assert queue.run(threading.current_thread, 0.0, 5.0) is first and first.is_alive()
    wait_until(lambda: queue._admitted == 0 and queue._ahead == 0.0)


def test_a_stop_landing_in_a_job_gives_its_caller_503_and_hands_the_waiting_job_to_a_new_thread(queue):
    started, go, ran_on = threading.Event(), threading.Event(), []

    def stopped():
        ran_on.append(threading.current_thread())
        started.set()
        go.wait(10)
        raise SystemExit  # as dash_duo's stop, landing mid-render

    with ThreadPoolExecutor(2) as callers:
        first = callers.submit(outcome, queue, stopped)
        assert started.wait(10)
        killed = ran_on[0]
        second = callers.submit(outcome, queue, threading.current_thread)
        wait_until(lambda: queue._admitted == 2)
        t0 = time.perf_counter()
        go.set()
        busy, successor = first.result(20), second.result(20)
    assert isinstance(busy, aq.Busy) and busy.status == 503 and "interrupted" in str(busy)
    assert isinstance(successor, threading.Thread) and successor is not killed
    wait_until(lambda: not killed.is_alive())  # it ends once it has handed over
    assert time.perf_counter() - t0 < 5  # handed over, not left to wait out its 10 s budget
    wait_until(lambda: queue._admitted == 0)


def test_a_thread_stopped_while_idle_is_replaced_by_the_next_run(queue, monkeypatch):
    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    stopped = queue.run(threading.current_thread, 0.0, 5.0)
    time.sleep(1.5)  # idle through a wake-up or two, as between a browser test's last render and its end
    stop_thread(stopped)
    wait_until(lambda: not stopped.is_alive(), 5)  # the stop lands while it holds no job
    assert escaped == []  # it ended quietly, not with a SystemExit traceback
    t0 = time.perf_counter()
    assert queue.run(threading.current_thread, 0.0, 10.0) not in (stopped, threading.current_thread())
    assert time.perf_counter() - t0 < 5
    wait_until(lambda: queue._admitted == 0)  # released by the done callback, just after the result


def test_concurrent_runs_after_the_thread_died_start_one_successor():
    q = aq.AttributionQueue(nice=0, places=6)
    ran_on = []
    assert isinstance(outcome(q, lambda: ran_on.append(threading.current_thread()) or sys.exit(1)), aq.Busy)
    wait_until(lambda: not ran_on[0].is_alive())  # the stopped thread is gone, no job waited for a successor
    gate, release, seen = threading.Barrier(6), threading.Event(), []

    def job():
        seen.append(threading.current_thread())
        release.wait(10)  # two threads would run two of these at once

    def caller():
        gate.wait(10)
        return outcome(q, job)

    with ThreadPoolExecutor(6) as callers:
        results = [callers.submit(caller) for _ in range(6)]
        wait_until(lambda: len(seen) >= 1 and q._admitted == 6)
        time.sleep(0.2)  # a second consumer, if one was started, takes a job now
        running = len(seen)
        release.set()
        assert [r.result(20) for r in results] == [None] * 6
    assert running == 1 and len(set(map(id, seen))) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_serves_attributions_with_its_own_thread(queue):
    occupy(queue, 2)  # the parent's thread is busy and its two places taken
    with queue._guard:  # held at the fork, as by a request thread being admitted
        pid = os.fork()
        if pid == 0:  # the child: the queue the parent used and the process's queue must both work here
            code = 2
            try:
                ok = queue.run(os.getpid, 0.0, 5.0) == os.getpid()
                code = 0 if ok and aq.attribution_queue().run(lambda: 7, 0.0, 5.0) == 7 else 1
            finally:
                os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    assert queue._admitted == 2  # the parent's own queue is untouched


def test_explanations_are_served_after_the_attribution_thread_was_stopped(client, demo_store, queue):  # noqa: F811
    stopped = queue.run(threading.current_thread, 0.0, 5.0)
    stop_thread(stopped)
    wait_until(lambda: not stopped.is_alive(), 5)
    r = post(client, "/api/explain", png_of(demo_store.get(None).images[21]), method="saliency", format="json")
    assert r.status_code == 200, r.get_json()
    assert queue.run(threading.current_thread, 0.0, 5.0) is not stopped
