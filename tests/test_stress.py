"""The stress test (stress.npz) on a copy of the digits demo: what it stores is the model's answer on the
corrupted images the dashboard regenerates, an interrupted job continues, the file is refused for other
weights or another test set, and the command, the job kind and ``GET /api/robustness`` expose it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.precompute_helpers import command_on_copy, demo_copy, refusals, run_in_two_goes
from trainer.rundir import load_run
from trainer.sources import load_test_split
from xai_dashboard.corruptions import CORRUPTIONS
from xai_dashboard.stress import precompute_stress
from xai_dashboard.stress_file import (
    STRESS, accuracy_table, broken, corrupted_test_images, load_stress, robustness_json,
)

N = 30  # 3 test images per class
PER_CORRUPTION = N * 5


@pytest.fixture(scope="module")
def stressed(tmp_path_factory):
    """A stress test of N images in two goes: the first killed during the third corruption."""
    run_dir = demo_copy(tmp_path_factory.mktemp("stress"), "stress.npz", "gradcam.npz")
    partial, note, seen = run_in_two_goes(precompute_stress, load_stress, run_dir, N + 2 * PER_CORRUPTION + 10,
                                          images=N, batch_size=16)
    return run_dir, partial, note, seen


def test_interrupted_job_continues_after_the_last_stored_corruption(stressed):
    run_dir, partial, note, seen = stressed
    assert partial["pred"].shape == (2, 5, N) and "2 of 14 corruptions" in note
    total = N * (1 + 14 * 5)
    assert seen[0][0] > N + 2 * PER_CORRUPTION and seen[-1] == (total, total)  # clean and two corruptions kept
    data, note = load_stress(run_dir, load_run(run_dir).meta)
    assert note == "" and data["pred"].shape == (14, 5, N)
    assert np.array_equal(data["pred"][:2], partial["pred"]) and np.array_equal(data["clean_pred"],
                                                                                 partial["clean_pred"])


def test_stores_the_models_answers_on_the_regenerated_corrupted_images(stressed):
    run_dir, *_ = stressed
    run = load_run(run_dir)
    data, _ = load_stress(run_dir, run.meta)
    x, y = load_test_split(run.meta["dataset"], None, run.meta["input_size"])
    assert np.bincount(y[data["index"]], minlength=10).tolist() == [3] * 10  # stratified
    assert np.array_equal(data["label"], y[data["index"]])
    model = run.load_model("cpu")

    def true_class_probs(images):
        """fp32 probabilities of the true classes, computed here without the job's code."""
        t = (torch.from_numpy(images).float() / 255 - torch.tensor(run.meta["mean"]).view(1, -1, 1, 1)) \
            / torch.tensor(run.meta["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            return torch.softmax(model(t), 1)[torch.arange(len(images)), torch.from_numpy(data["label"])].numpy()

    # bf16 inference (where the CPU has it) moves probabilities by a little
    assert np.abs(true_class_probs(x[data["index"]]) - data["clean_prob"]).max() < 0.03
    for name, severity in (("fog", 5), ("gaussian_noise", 3), ("elastic_transform", 2)):
        c = data["config"]["corruptions"].index(name)
        images = corrupted_test_images(x[data["index"]], data["index"], name, severity, data["config"]["seed"])
        assert images.shape == (N, 1, 32, 32) and images.dtype == np.uint8
        assert np.abs(true_class_probs(images) - data["prob"][c, severity - 1]).max() < 0.03


def test_accuracy_table_and_broken_images(stressed):
    run_dir, *_ = stressed
    data, _ = load_stress(run_dir, load_run(run_dir).meta)
    table = accuracy_table(data)
    assert list(table["corruptions"]) == list(CORRUPTIONS) and table["images"] == N
    assert table["clean"] == np.mean(data["clean_pred"] == data["label"])
    fog5 = table["corruptions"]["fog"][4]
    assert fog5 == np.mean(data["pred"][list(CORRUPTIONS).index("fog"), 4] == data["label"])
    pos = broken(data, "fog", 5)
    c = list(CORRUPTIONS).index("fog")
    assert len(pos) > 0  # heavy fog breaks some digits
    assert (data["clean_pred"][pos] == data["label"][pos]).all()
    assert (data["pred"][c, 4, pos] != data["label"][pos]).all()
    right = (data["clean_pred"] == data["label"]) & (data["pred"][c, 4] != data["label"])
    assert sorted(pos.tolist()) == np.flatnonzero(right).tolist()
    fall = data["clean_prob"][pos].astype(float) - data["prob"][c, 4, pos]
    assert (np.diff(fall) <= 0).all()  # most confidently broken first
    label = int(data["label"][pos[0]])
    assert set(data["label"][broken(data, "fog", 5, label)].tolist()) == {label}
    per_class = accuracy_table(data, label)
    assert per_class["images"] == 3 and per_class["corruptions"]["fog"][4] < 1


@pytest.mark.parametrize("field", ["weights_sha256", "dataset"])
def test_refused_for_other_weights_or_another_test_set(stressed, field):
    data, problem, error, words = refusals(stressed[0], field, load_stress, STRESS)
    assert data is None and f"computed for {words}" in problem and "precompute stress" in problem
    assert words in error


def test_command_job_kind_and_api(stressed, tmp_path, capsys):
    from xai_dashboard import cli, jobs
    from xai_dashboard.app import create_app
    from xai_dashboard.store import RunStore

    assert jobs.KINDS["stress"] == "xai_dashboard.stress:precompute_stress"
    assert cli.build_precompute_parser().parse_args(["stress", "RUN"]).images is None  # the whole test set
    copy, status, out = command_on_copy(stressed[0], tmp_path, capsys, "stress", "--images", str(N))
    assert status == 0  # complete: nothing to do
    assert out[0].split()[:3] == ["corruption", "sev", "1"] and [line.split()[0] for line in out[1:16]] == [
        *CORRUPTIONS, "mean"]
    assert f"on {N} test images" in out[-1]

    bare = demo_copy(tmp_path / "bare", "stress.npz")
    store = RunStore.from_dirs([copy, bare])
    client = create_app(store=store).server.test_client()
    body = client.get(f"/api/robustness?run={store.names[0]}").get_json()
    assert body == robustness_json(store.runs[store.names[0]])[0] and body["complete"] is True
    assert set(body["corruptions"]) == set(CORRUPTIONS) and all(len(v) == 5 for v in body["corruptions"].values())
    stored, _ = load_stress(copy, store.runs[store.names[0]].meta)
    assert body["clean"] == pytest.approx(np.mean(stored["clean_pred"] == stored["label"]))
    missing = client.get(f"/api/robustness?run={store.names[1]}")
    assert missing.status_code == 404 and "precompute stress" in missing.get_json()["error"]
    assert client.get("/api/robustness?run=nope").status_code == 404


def test_view_names_the_command_when_the_run_has_no_stress_test(tmp_path):
    """The heatmap callback, posted as the page would, for a run without stress.npz."""
    from xai_dashboard.app import create_app
    from xai_dashboard.store import RunStore

    bare = demo_copy(tmp_path, "stress.npz")
    client = create_app(store=RunStore.from_dirs([bare])).server.test_client()
    outputs = [{"id": "stress-heatmap", "property": "figure"}, {"id": "stress-summary", "property": "children"},
               {"id": "stress-note", "property": "children"}, {"id": "stress-class", "property": "options"}]
    values = {"run-select": "digits-demo", "stress-class": "all", "stress-opened": 1, "stress-status": ""}
    props = {"stress-status": "children", "stress-opened": "data"}
    body = {"output": "..stress-heatmap.figure...stress-summary.children...stress-note.children..."
                      "stress-class.options..", "outputs": outputs, "changedPropIds": ["run-select.value"],
            "inputs": [{"id": k, "property": props.get(k, "value"), "value": v} for k, v in values.items()],
            "state": [{"id": "view-tabs", "property": "value", "value": "stress"}]}
    answer = client.post("/_dash-update-component", json=body).get_json()["response"]
    assert f"xai-dashboard precompute stress {bare}" in json.dumps(answer["stress-note"])
    assert "no stress test for this run" in json.dumps(answer["stress-heatmap"])
