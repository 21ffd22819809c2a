"""Locust users for ``bench/load_test.py``: a mix of what the dashboard's users ask for.

``Analyst`` (weight 31): predict, Grad-CAM, Integrated Gradients (32 steps), thumbnails and
a Dash callback (the one driven by the run selector alone). ``Attacker`` (weight 1): the
worst-case uploads of the hardening issue (a 16-bit 7000x7000 PNG, a truncated JPEG that
claims 7000x7000), which must be refused or answered within the memory budget, never 5xx.

Environment: ``XAI_LOAD_RUN`` (the run to ask about; default: the server's default run).
"""
from __future__ import annotations

import io
import json
import os
import random

import numpy as np
from locust import HttpUser, between, events, task
from PIL import Image

RUN = os.environ.get("XAI_LOAD_RUN", "")


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def worst_case_uploads() -> list[tuple[str, bytes]]:
    """(name, bytes) of the uploads that cost gigabytes before the hardening work."""
    big16 = Image.fromarray(np.zeros((7000, 7000), dtype=np.uint16))
    buf = io.BytesIO()
    big16.save(buf, format="PNG")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((7000, 7000, 3), dtype=np.uint8)).save(jpeg, format="JPEG", quality=5)
    return [("png16-7000.png", buf.getvalue()), ("truncated-7000.jpg", jpeg.getvalue()[:1200])]


_RNG = np.random.default_rng(0)


def fresh_image() -> bytes:
    """A new random 32x32 PNG: every request is a cache miss, so each explanation is computed."""
    return _png(_RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))

WORST: list[tuple[str, bytes]] = []


@events.test_start.add_listener
def _prepare(environment, **_kw):
    WORST.extend(worst_case_uploads())


class Analyst(HttpUser):
    weight = 31
    wait_time = between(0.2, 1.0)

    def on_start(self):
        runs = self.client.get("/api/runs").json()
        self.run = RUN or runs["default"]
        self.n_test = next(r for r in runs["runs"] if r["name"] == self.run)["dataset"]["num_test"]
        deps = self.client.get("/_dash-dependencies").json()
        self.callback = next((d for d in deps if [i["id"] for i in d["inputs"]] == ["run-select"]), None)

    def _post(self, path: str, name: str, **fields):
        files = {"file": ("x.png", fresh_image(), "image/png")}
        with self.client.post(path, files=files, data={"run": self.run, **fields}, name=name,
                              catch_response=True) as r:
            if r.status_code >= 500:
                r.failure(f"{r.status_code}")
            else:
                r.success()

    @task(8)
    def predict(self):
        self._post("/api/predict", "predict")

    @task(4)
    def gradcam(self):
        self._post("/api/explain", "gradcam", method="gradcam", format="png")

    @task(1)
    def integrated_gradients(self):
        self._post("/api/explain", "ig32", method="integrated_gradients", steps="32", format="json")

    @task(6)
    def thumbnail(self):
        i = random.randrange(min(self.n_test, 10_000))
        self.client.get(f"/img/{self.run}/{i}.png?size=96", name="thumbnail")

    @task(2)
    def callback(self):
        if self.callback is None:
            return
        d = self.callback
        outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in d["output"].strip(".").split("...")]
        body = {"output": d["output"], "outputs": outputs if d["output"].startswith("..") else outputs[0],
                "inputs": [{"id": "run-select", "property": "value", "value": self.run}],
                "changedPropIds": ["run-select.value"], "state": []}
        self.client.post("/_dash-update-component", data=json.dumps(body), name="callback",
                         headers={"Content-Type": "application/json"})


class Attacker(HttpUser):
    weight = 1
    fixed_count = 1
    wait_time = between(0.5, 1.5)

    @task
    def upload_worst_case(self):
        if not WORST:
            return
        name, data = random.choice(WORST)
        with self.client.post("/api/predict", files={"file": (name, data)}, name="worst-upload",
                              catch_response=True) as r:
            if r.status_code >= 500 and r.status_code != 503:
                r.failure(f"{r.status_code}")
            else:
                r.success()
