"""Derived run files (trainer.artifacts): round trips, refusal of stale, foreign and other-version
files with a message naming the file, the reason and the fix, atomic writes; and the trainer
never importing the dashboard."""
from __future__ import annotations

import ast
import os

import numpy as np
import pytest

from tests.conftest import ROOT
from trainer import artifacts, rundir
from trainer.artifacts import Artifact, ArtifactError, ArtifactMissing

META = {"weights_sha256": "1a2b3c4d" + "0" * 56, "dataset": {"fingerprint": "feedbeef00112233"}, "arch": "lenet5",
        "arch_kwargs": {}, "input_size": 32, "in_channels": 1, "mean": [0.3], "std": [0.3], "gradcam_layer": "f.b2"}
MAPS = Artifact("maps.npz", 3, "npz", ("weights", "test_set"), "xai-dashboard precompute maps {run}")
REPORT = Artifact("report.json", 1, "json", ("test_set",), "make-report {run}")


def _arrays() -> dict:
    rng = np.random.default_rng(0)
    return {"pred": rng.random((4, 8, 8)).astype(np.float16), "label": np.arange(4)}


def test_round_trip_npz_and_json(tmp_path):
    data = _arrays()
    path = artifacts.write(tmp_path, MAPS, META, data)
    assert path == tmp_path / "maps.npz"
    got = artifacts.read(tmp_path, MAPS, META)
    assert set(got) == set(data)
    for k in data:
        np.testing.assert_array_equal(got[k], data[k])
        assert got[k].dtype == data[k].dtype
    with np.load(path, allow_pickle=False) as z:  # the header travels inside the file, without pickle
        assert artifacts.HEADER in z.files
    obj = {"accuracy": 0.91, "per_class": [1, 2, 3]}
    artifacts.write(tmp_path, REPORT, META, obj)
    assert artifacts.read(tmp_path, REPORT, META) == obj


def test_refused_when_weights_or_test_set_change(tmp_path):
    artifacts.write(tmp_path, MAPS, META, _arrays())
    new_weights = {**META, "weights_sha256": "3c4d5e6f" + "0" * 56}
    with pytest.raises(ArtifactError) as e:
        artifacts.read(tmp_path, MAPS, new_weights)
    assert str(e.value) == ("maps.npz: computed for weights 1a2b3c4d… but the run has 3c4d5e6f…; "
                            f"rerun `xai-dashboard precompute maps {tmp_path}`")
    assert isinstance(e.value, rundir.RunDirError)  # callers that catch RunDirError see it too
    with pytest.raises(ArtifactError, match="computed for test set feedbeef… but the run has 00000000…"):
        artifacts.read(tmp_path, MAPS, {**META, "dataset": {"fingerprint": "0000000000000000"}})
    # a binding the artefact does not declare does not matter
    assert artifacts.read(tmp_path, MAPS, {**META, "mean": [0.5]}) is not None


def test_refused_for_another_format_version_or_another_file(tmp_path):
    artifacts.write(tmp_path, MAPS, META, _arrays())
    newer = Artifact(MAPS.name, MAPS.version + 1, "npz", MAPS.binds, MAPS.producer)
    with pytest.raises(ArtifactError, match="maps.npz: format version 3, but this version reads 4; rerun"):
        artifacts.read(tmp_path, newer, META)
    os.replace(tmp_path / "maps.npz", tmp_path / "other.npz")  # a file copied under another name
    other = Artifact("other.npz", MAPS.version, "npz", MAPS.binds, "x {run}")
    with pytest.raises(ArtifactError, match="holds a 'maps.npz', not a 'other.npz'"):
        artifacts.read(tmp_path, other, META)
    np.savez(tmp_path / "other.npz", pred=np.zeros(3))  # no header: written by something else
    with pytest.raises(ArtifactError, match="written without a header"):
        artifacts.read(tmp_path, other, META)
    (tmp_path / "other.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArtifactError, match="unreadable"):
        artifacts.read(tmp_path, other, META)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactMissing, match=r"maps.npz: not computed; rerun `xai-dashboard precompute maps"):
        artifacts.read(tmp_path, MAPS, META)
    assert artifacts.read(tmp_path, MAPS, META, missing_ok=True) is None


def test_a_half_written_file_never_appears(tmp_path, monkeypatch):
    artifacts.write(tmp_path, MAPS, META, _arrays())
    before = (tmp_path / "maps.npz").read_bytes()

    def killed(_fd):  # the bytes are in the temp file; the process dies before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.os, "fsync", killed)
    bigger = {"pred": np.ones((400, 64, 64), np.float16), "label": np.arange(400)}
    with pytest.raises(KeyboardInterrupt):
        artifacts.write(tmp_path, MAPS, {**META, "weights_sha256": "f" * 64}, bigger)
    assert (tmp_path / "maps.npz").read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npz"]  # no temp file left behind
    assert artifacts.read(tmp_path, MAPS, META)["label"].shape == (4,)


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="unknown bindings"):
        artifacts.declare("x.npz", version=1, kind="npz", binds=("weights", "moon_phase"), producer="p {run}")
    with pytest.raises(ValueError, match="kind"):
        artifacts.declare("x.csv", version=1, kind="csv", binds=(), producer="p {run}")
    from xai_dashboard.gradcam_file import GRADCAM

    assert artifacts.ARTIFACTS["gradcam.npz"] == GRADCAM
    with pytest.raises(ValueError, match="already declared differently"):
        artifacts.declare("gradcam.npz", version=GRADCAM.version + 1, kind="npz", binds=GRADCAM.binds,
                          producer=GRADCAM.producer)
    with pytest.raises(ValueError, match="reserved"):
        artifacts.write("/nonexistent", MAPS, META, {artifacts.HEADER: np.zeros(1)})


def test_trainer_never_imports_the_dashboard():
    """The trainer writes run directories; the dashboard reads them. Never the other way round."""
    offenders = []
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] == "xai_dashboard"]
    assert not offenders, "\n".join(offenders)
