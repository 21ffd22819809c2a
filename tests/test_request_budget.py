"""Predictions never queue behind attributions, and an attribution's cost is decided before it starts
(hardening issue #5). On the shipped digits demo, which needs no external data."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.conftest import CHECKPOINTS
from xai_dashboard import explain
from xai_dashboard.explain_spec import ExplainError, Settings
from xai_dashboard.store import RunStore


@pytest.fixture(scope="module")
def run():
    return RunStore.from_dirs([CHECKPOINTS / "digits-demo"]).get(None)


def test_prediction_does_not_wait_for_an_attribution_holding_the_model(run):
    image = run.images[0]
    want = run.probs[0]
    done: list[np.ndarray] = []
    with run.lock:  # what a long Integrated Gradients render holds
        worker = threading.Thread(target=lambda: done.append(explain.predict(run, image)))
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "predict waited for the attribution lock"
    assert np.allclose(done[0], want, atol=1e-4)  # and it is the stored prediction
    assert explain.hook_count(run.inference_model()) == 0


def test_attribution_over_the_budget_is_refused_before_it_starts(run, monkeypatch):
    monkeypatch.setenv(explain.BUDGET_ENV, "10")
    # 10 s allows 100 passes; a real pass is far cheaper, so the accepted render ends well within its 10 s
    monkeypatch.setattr(run, "pass_seconds", 0.1)
    image = run.images[1]
    with pytest.raises(ExplainError) as e:
        explain.explain_image(run, image, 0, Settings("integrated_gradients", ig_steps=256))
    assert e.value.status == 400 and "256 passes" in str(e.value) and "10 s limit" in str(e.value)
    heat = explain.explain_image(run, image, 0, Settings("integrated_gradients", ig_steps=64))
    assert heat.shape == image.shape[1:]


def test_busy_model_answers_503_after_the_budget(run, monkeypatch):
    monkeypatch.setenv(explain.BUDGET_ENV, "0.2")
    with run.lock:
        with pytest.raises(ExplainError) as e:
            explain.explain_image(run, run.images[2], 0, Settings("saliency"))
    assert e.value.status == 503 and "busy" in str(e.value)


def test_pass_cost_is_measured_once_and_positive(run):
    first = explain.pass_seconds(run)
    assert first > 0 and explain.pass_seconds(run) == first
