"""Start-up cost: opening runs and serving the error-analysis views must not import torch.

``import torch`` alone takes ~2 s here, two thirds of the 3 s start-up budget, so
the store, the layout and the analysis callbacks work on numpy; torch and
Captum load on the first request that runs a model. Each check runs in a
fresh interpreter, because this test process has long since imported torch.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CHECKPOINTS, ROOT, _cifar_run_dirs

PROBE = r"""
import io, json, sys
from PIL import Image
from xai_dashboard.app import create_app, warm_up

def heavy():
    return sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "captum", "sklearn"})

app = create_app(sys.argv[2:], sys.argv[1])
store = app.server.config["XAI_STORE"]
warm_up(store)
client = app.server.test_client()
run = store.get(None)
status = {
    "page": client.get("/").status_code,
    "layout": client.get("/_dash-layout").status_code,
    "thumbnail": client.get(f"/img/{run.name}/0.png?size=96").status_code,
    "runs_api": client.get("/api/runs").status_code,
}
before = heavy()
img = run.images[0]
buf = io.BytesIO()
Image.fromarray(img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0]).save(buf, format="PNG")
r = client.post("/api/predict", data={"file": (io.BytesIO(buf.getvalue()), "x.png")})
print(json.dumps({"runs": store.names, "status": status, "before": before, "predict": r.status_code,
                  "label": r.get_json().get("label"), "after": heavy()}))
"""


def _probe(data_dir: str, dirs: list[str], home) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, data_dir, *dirs], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"XAI_CACHE_DIR": str(home), "PATH": "/usr/bin:/bin",
                                                       "HOME": str(home)})


def test_what_make_run_opens_imports_neither_torch_nor_sklearn(tmp_path):
    """Every shipped run, the digits demo included (its images come from scikit-learn's data file,
    read with numpy), with an empty user cache: the first launch a new user makes."""
    out = _probe("", [str(CHECKPOINTS / "digits-demo")], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["runs"] == ["digits-demo"] and set(got["status"].values()) == {200}, got
    assert got["before"] == [], f"start-up imported {got['before']}"
    assert got["predict"] == 200 and "torch" in got["after"]


def test_opening_cifar_runs_and_serving_views_imports_no_torch(cifar_dir, tmp_path):
    dirs = [str(d) for d in _cifar_run_dirs()[:2]]
    assert dirs, "no CIFAR-10 run under checkpoints/"
    out = _probe(str(cifar_dir), dirs, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(got["runs"]) == len(dirs)
    assert set(got["status"].values()) == {200}, got["status"]
    assert got["before"] == [], f"start-up imported {got['before']}"
    # ...and the first model use still works, loading torch then
    assert got["predict"] == 200 and got["label"] in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                       "frog", "horse", "ship", "truck")
    assert "torch" in got["after"]
