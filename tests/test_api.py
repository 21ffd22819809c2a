"""REST API: predictions and explanations, JSON errors for every bad input, and 32
simultaneous requests against gunicorn with two workers."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_uploads import bad_inputs

from xai_dashboard import explain, explain_spec
from xai_dashboard.explain_spec import Settings

ROOT = Path(__file__).resolve().parent.parent


def png_of(image) -> bytes:
    arr = np.asarray(image)
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(demo_store, tmp_path_factory):
    from xai_dashboard.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield create_app(store=demo_store).server.test_client()


def post(client, route: str, data: bytes | None, name: str = "image.png", **fields):
    form = {k: str(v) for k, v in fields.items()}
    if data is not None:
        form["file"] = (io.BytesIO(data), name)
    return client.post(route, data=form, content_type="multipart/form-data")


def test_runs(client, demo_store):
    r = client.get("/api/runs")
    assert r.status_code == 200
    runs = r.get_json()["runs"]
    assert [x["name"] for x in runs] == demo_store.names
    first = runs[0]
    assert first["gradcam_layer"] == demo_store.get(None).meta["gradcam_layer"]
    assert first["layers"] and "gradcam" in first["methods"] and len(first["class_names"]) == 10


def test_predict_matches_the_stored_predictions(client, demo_store):
    run = demo_store.get(None)
    for i in range(5):
        r = post(client, "/api/predict", png_of(run.images[i]))
        assert r.status_code == 200
        body = r.get_json()
        assert set(body) == {"run", "label", "index", "confidence", "probabilities"}
        assert body["run"] == run.name and body["index"] == int(run.preds[i])
        assert body["label"] == run.class_names[body["index"]]
        probs = np.array([body["probabilities"][c] for c in run.class_names])
        np.testing.assert_allclose(probs, run.probs[i], atol=1e-5)
        assert body["confidence"] == pytest.approx(probs.max())


def test_explain_json_and_png(client, demo_store):
    run = demo_store.get(None)
    image = run.images[4]
    for method in explain_spec.METHODS:
        r = post(client, "/api/explain", png_of(image), method=method, format="json", steps=8)
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        heat = np.array(body["heatmap"], dtype=np.float32)
        assert body["shape"] == [32, 32] and heat.shape == (32, 32) and 0 <= heat.min() and heat.max() <= 1
        assert body["prediction"]["index"] == int(run.preds[4]) and body["method"] == method
        want = explain.explain_image(run, image, int(run.preds[4]), Settings(method=method, ig_steps=8))
        np.testing.assert_allclose(heat, want, atol=1e-6)
    r = post(client, "/api/explain", png_of(image), target="3", versus="5", format="json")
    assert r.get_json()["target"]["index"] == [3, 5]
    r = post(client, "/api/explain", png_of(image), run=run.name, layer="features.block1", target="7")
    assert r.status_code == 200 and r.mimetype == "image/png"
    overlay = Image.open(io.BytesIO(r.data))
    assert overlay.size[0] >= 256 and r.headers["X-Prediction"] == run.class_names[int(run.preds[4])]


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_uploads(client, name):
    data, status, words = bad_inputs()[name]
    for route in ("/api/predict", "/api/explain"):
        r = post(client, route, data, name=name)
        assert r.status_code == status and r.is_json, (route, r.status_code, r.data[:200])
        assert words.lower() in r.get_json()["error"].lower()


def test_request_errors(client, demo_store):
    good = png_of(demo_store.get(None).images[0])
    cases = [
        (dict(run="no-such-run"), 404, "unknown run"),
        (dict(layer="no.such.layer"), 404, "unknown layer"),
        (dict(layer="classifier.fc1"), 400, "spatial"),
        (dict(method="lime"), 400, "unknown method"),
        (dict(target="giraffe"), 400, "unknown target"),
        (dict(target="12"), 400, "outside"),
        (dict(target="true"), 400, "no true label"),
        (dict(target="3", versus="3"), 400, "other than"),
        (dict(format="gif"), 400, "unknown format"),
        (dict(method="integrated_gradients", steps="many"), 400, "integer"),
        (dict(method="occlusion", window="0"), 400, "window"),
        (dict(alpha="2"), 400, "alpha"),
    ]
    for fields, status, words in cases:
        r = post(client, "/api/explain", good, **fields)
        assert r.status_code == status and words in r.get_json()["error"], (fields, r.get_json())
    r = post(client, "/api/predict", None)
    assert r.status_code == 400 and "file" in r.get_json()["error"]
    assert client.get("/api/predict").status_code == 405
    r = client.get("/api/nothing/here")
    assert r.status_code == 404 and r.is_json


def test_too_large_is_json_413(client):
    # over the limit but inside the multipart slack: the upload check answers
    r = post(client, "/api/predict", b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 2**20))
    assert r.status_code == 413 and "limit" in r.get_json()["error"]
    # far over: Flask refuses the body (RequestEntityTooLarge) and the handler answers JSON
    r = post(client, "/api/explain", b"\0" * (12 * 2**20))
    assert r.status_code == 413 and r.is_json and "too large" in r.get_json()["error"]


def test_a_big_form_field_is_told_the_limit_that_applied(client, demo_store):
    good = png_of(demo_store.get(None).images[0])
    r = post(client, "/api/explain", good, method="x" * 600_000)  # far below the upload limit, over the field limit
    assert r.status_code == 413 and r.is_json
    message = r.get_json()["error"]
    assert "500,000 bytes" in message and "10 MB" not in message, message
    r = post(client, "/api/explain", b"\0" * (12 * 2**20))  # the body limit: says so, with the number
    assert r.status_code == 413 and "uploads are limited to 10 MB" in r.get_json()["error"]


def test_errors_echo_at_most_80_characters_of_what_was_sent(client, demo_store):
    good = png_of(demo_store.get(None).images[0])
    long = "r" * 60_000
    cases = [("/api/predict", dict(run=long), 404), ("/api/explain", dict(layer=long), 404),
             ("/api/explain", dict(target=long), 400), ("/api/explain", dict(method=long), 400),
             ("/api/explain", dict(format=long), 400), ("/api/explain", dict(method="occlusion", window=long), 400)]
    for route, fields, status in cases:
        r = post(client, route, good, **fields)
        message = r.get_json()["error"]
        assert r.status_code == status and "r" * 80 + "... (60,000 characters)" in message, (fields.keys(), message)
        assert "r" * 81 not in message and len(message) < 1000
    r = client.get("/api/" + "p" * 5000)
    assert r.status_code == 404 and len(r.get_json()["error"]) < 300


def test_busy_decoder_is_503_with_retry_after(client, demo_store, monkeypatch):
    from xai_dashboard import uploads

    busy = uploads.DecodeMemory(2**20, slots=1)
    monkeypatch.setattr(uploads, "_DECODE_MEMORY", busy)
    monkeypatch.setattr(uploads, "DECODE_WAIT_S", 0.05)
    with busy.hold(1, 1.0):  # another request holds the only decode slot
        r = post(client, "/api/predict", png_of(demo_store.get(None).images[0]))
    assert r.status_code == 503 and r.headers["Retry-After"] == "5" and "busy" in r.get_json()["error"]


def test_labels_in_headers_are_ascii_with_an_exact_utf8_copy():
    from xai_dashboard.api import label_headers

    assert label_headers("X-Prediction", "dog") == {"X-Prediction": "dog", "X-Prediction*": "UTF-8''dog"}
    got = label_headers("X-Target", "猫 − dog")
    assert got == {"X-Target": "? - dog", "X-Target*": "UTF-8''%E7%8C%AB%20%E2%88%92%20dog"}
    assert label_headers("X", "a\r\nSet-Cookie: x")["X"] == "a??Set-Cookie: x"  # no header injection


def test_unexpected_errors_are_json_500_without_traceback(client, demo_store, monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(explain, "predict", boom)
    r = post(client, "/api/predict", png_of(demo_store.get(None).images[0]))
    assert r.status_code == 500 and r.is_json
    text = r.get_data(as_text=True)
    assert "secret" not in text and "Traceback" not in text


# ------------------------------------------------------------------ gunicorn, 2 workers, 32 requests at once

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn_url(cifar_store, cifar_dir, tmp_path_factory):
    run = next(r for r in cifar_store.runs.values() if r.meta["dataset"]["name"] == "cifar10")
    port = free_port()
    # One torch thread per worker: two workers already fill the two cores, and OpenMP threads
    # spinning against each other (and against other jobs) make each request 10-50x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XAI_RUNS": str(run.run.path), "XAI_DATA_DIR": str(cifar_dir),
           "XAI_CACHE_DIR": str(tmp_path_factory.mktemp("gunicorn-cache"))}
    log = tmp_path_factory.mktemp("gunicorn") / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "--preload", "-b", f"127.0.0.1:{port}",
                                 "--timeout", "120", "xai_dashboard.wsgi:server"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(url + "/api/runs", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # socket bound, workers still loading the runs
                pass
            if time.time() > deadline:
                pytest.fail(f"gunicorn did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        print(f"gunicorn ready after {time.time() - deadline + 120:.1f} s")
        yield url, run
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_32_simultaneous_explains_under_gunicorn(gunicorn_url):
    import requests

    url, run = gunicorn_url
    methods = [("gradcam", {}), ("saliency", {}), ("guided_gradcam", {}), ("occlusion", {"window": "8", "stride": "8"})]
    methods = [m for m in methods if m[0] not in explain.unavailable_methods(run)]  # guided: ReLU networks only
    jobs = [(i, *methods[i % len(methods)]) for i in range(32)]  # 32 distinct (image, method): no cache hits

    def call(job):
        i, method, extra = job
        r = requests.post(url + "/api/explain", files={"file": (f"{i}.png", png_of(run.images[i]))},
                          data={"method": method, "format": "json", **extra}, timeout=120)
        return r.status_code, r.json()

    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, jobs))
    print(f"32 concurrent /api/explain: {time.perf_counter() - start:.2f} s")
    assert [s for s, _ in answers] == [200] * 32, [b for s, b in answers if s != 200][:3]
    for (i, method, extra), (_s, body) in zip(jobs, answers):
        settings = Settings(method=method, **{k: int(v) for k, v in extra.items()})
        want = explain.explain_image(run, run.images[i], int(run.preds[i]), settings)
        np.testing.assert_allclose(np.array(body["heatmap"], dtype=np.float32), want, atol=1e-5)
        assert body["prediction"]["index"] == int(run.preds[i])
