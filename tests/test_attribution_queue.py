"""Attributions run on one low-priority thread per process behind a bounded queue (hardening issue #15's
load target, :mod:`xai_dashboard.attribution_queue`): the thread's nice value, 503 with Retry-After when
the queue is full or the wait would pass the budget, predictions served while an attribution holds the
thread. On the shipped digits demo, which needs no external data."""
from __future__ import annotations

import os
import sys
import threading
import time

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
    q = aq.AttributionQueue(nice=10, max_admitted=2)
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
