"""Annotator distributions (issue #10, section 2): CIFAR-10H checked by hand, the slices against their
definitions, the calibration figures against scikit-learn, and bad annotator files refused with the reason."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import CHECKPOINTS
from xai_dashboard import analysis, human_analysis as ha
from xai_dashboard.human_labels import HUMAN_LABELS_ENV, annotations, human_entropy, human_probs
from xai_dashboard.store import softmax

H10 = "cifar10h_test_probs.npz"


def _cifar10h(cifar_dir):
    path = cifar_dir / H10
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared CIFAR-10H file)")
    with np.load(path) as f:
        return f["probs"].astype(np.float64), f["counts"], f["y"].astype(np.int64)


def test_cifar10h_confusion_of_eight_images_by_hand(cifar_dir):
    """Test images 0-7 (labels cat, ship, ship, airplane, frog, frog, automobile, frog) and their votes
    as read from the file's ``counts``, written out here."""
    probs, counts, y = _cifar10h(cifar_dir)
    assert y[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6]
    assert counts[0].tolist() == [0, 1, 1, 48, 0, 1, 0, 0, 0, 0]
    expected = np.zeros((10, 10))
    expected[3, [1, 2, 3, 5]] = [1 / 51, 1 / 51, 48 / 51, 1 / 51]             # image 0
    expected[8, [2, 8]] = [1 / 51 / 2, (50 / 51 + 52 / 52) / 2]              # images 1 and 2
    expected[0, [0, 2, 4, 6, 8, 9]] = np.array([38, 8, 1, 1, 2, 1]) / 51      # image 3
    expected[6, 2] = (1 / 51 + 0 + 1 / 50) / 3                                # images 4, 5, 7
    expected[6, 3] = (8 / 53) / 3
    expected[6, 6] = (50 / 51 + 45 / 53 + 49 / 50) / 3
    expected[1, [1, 9]] = [51 / 52, 1 / 52]                                   # image 6
    got = analysis.row_normalise(ha.human_confusion(y[:8], probs[:8], 10))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def _fast_run(cifar_dir):
    """cifar10-fast's stored test probabilities with the CIFAR-10H file, as the page would use them."""
    from xai_dashboard.store import RunStore

    human, _, y = _cifar10h(cifar_dir)
    store = RunStore.from_dirs([CHECKPOINTS / "cifar10-fast"], str(cifar_dir))
    run = store.get("cifar10-fast")
    assert np.array_equal(run.labels, y)
    return store, run, human


def _members(labels, probs, human) -> dict[str, set]:
    """Each slice's definition, written out image by image (independent of human_analysis)."""
    out = {k: set() for k in ha.SLICES}
    for i in range(len(labels)):
        given, pred, conf = labels[i], int(np.argmax(probs[i])), float(np.max(probs[i]))
        top = float(np.max(human[i]))
        if human[i, given] >= ha.HUMANS_AGREE and pred != given:
            out["agree_model_wrong"].add(i)
        if conf >= ha.MODEL_CONFIDENT and top < ha.HUMANS_SPLIT:
            out["confident_split"].add(i)
        if any(human[i, c] > human[i, given] for c in range(human.shape[1]) if c != given):
            out["disagree_given"].add(i)
        if conf < ha.MODEL_UNSURE and top < ha.HUMANS_SPLIT:
            out["both_unsure"].add(i)
    return out


def test_slices_hold_exactly_their_definition_synthetic():
    rng = np.random.default_rng(0)
    n, k = 3000, 6
    labels = rng.integers(0, k, n)
    # half peaked, half spread, shuffled apart: every slice gets members
    human = np.concatenate([rng.dirichlet(np.full(k, a), n // 2) for a in (0.1, 1.0)])
    probs = np.concatenate([rng.dirichlet(np.full(k, a), n // 2) for a in (0.1, 1.0)])
    rng.shuffle(probs)
    slices = ha.slice_indices(labels, probs, human)
    expected = _members(labels, probs, human)
    for key in ha.SLICES:
        assert sorted(slices[key].tolist()) == sorted(expected[key]), key
        assert len(expected[key]) > 20, key  # every slice is exercised
        assert len(set(slices[key].tolist())) == len(slices[key])


def test_slices_hold_exactly_their_definition_cifar10h(cifar_dir):
    store, run, human = _fast_run(cifar_dir)
    slices = ha.comparison(analysis.predictions_of(run), annotations(run, store.data_dir)).slices
    expected = _members(run.labels, run.probs, human)
    for key in ha.SLICES:
        assert sorted(slices[key].tolist()) == sorted(expected[key]), key
    # the galleries' order: the documented key, most telling first
    agree = slices["agree_model_wrong"]
    assert np.all(np.diff(run.probs[agree].max(1)) <= 0)
    disagree = slices["disagree_given"]
    assert np.all(np.diff(human[disagree, run.labels[disagree]]) >= 0)


def test_human_probs_and_entropy_of_a_run(cifar_dir, monkeypatch):
    monkeypatch.delenv(HUMAN_LABELS_ENV, raising=False)
    store, run, human = _fast_run(cifar_dir)
    monkeypatch.setenv("XAI_DATA_DIR", str(cifar_dir))  # found beside the data without being told
    probs = human_probs(run)
    assert probs.shape == (10_000, 10) and np.allclose(probs, human)
    ent = human_entropy(run)
    by_hand = -(48 / 51 * np.log2(48 / 51) + 3 * (1 / 51) * np.log2(1 / 51))  # image 0's votes
    assert ent.shape == (10_000,) and ent[0] == pytest.approx(by_hand) and ent[2] == pytest.approx(0)


def test_calibration_against_people_reduces_to_the_usual_with_hard_labels():
    """With one-hot 'people', ECE against people is the reliability diagram's ECE (scikit-learn's
    calibration_curve), the cross-entropy is scikit-learn's log loss and KL is the same."""
    from sklearn.metrics import log_loss

    p = np.load(CHECKPOINTS / "digits-demo" / "predictions.npz")
    probs, labels = softmax(p["logits"]), p["label"].astype(np.int64)
    onehot = np.eye(probs.shape[1])[labels]
    cal = ha.calibration(labels, probs, onehot)
    assert cal["ece_human"] == pytest.approx(analysis.reliability(labels, probs)["ece"], abs=1e-9)
    assert cal["ce_human"] == pytest.approx(log_loss(labels, np.clip(probs, 1e-12, 1), labels=range(10)), rel=1e-4)
    assert cal["kl_human"] == pytest.approx(cal["ce_human"], rel=1e-6) and cal["human_entropy"] == 0
    # people who agree with the model's own probabilities: no KL at all
    assert ha.calibration(labels, probs, probs.astype(np.float64))["kl_human"] == pytest.approx(0, abs=1e-6)


def test_offdiagonal_correlation_is_pearsons_r_of_the_offdiagonal_cells():
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 5)), rng.random((5, 5))
    off = ~np.eye(5, dtype=bool)
    got = ha.offdiagonal_correlation(a, b)
    assert got["pearson"] == pytest.approx(np.corrcoef(a[off], b[off])[0, 1]) and got["cells"] == 20


# ---------------------------------------------------------------- bad annotator files

def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(run):
    human = np.full((len(run.labels), 10), 0.02)
    human[np.arange(len(run.labels)), run.labels] = 0.82
    return human


BAD = {
    "wrong shape": (lambda run, h: {"probs": h[:-1], "y": run.labels[:-1]}, "shape (359, 10)"),
    "wrong classes": (lambda run, h: {"probs": h[:, :9] / h[:, :9].sum(1, keepdims=True), "y": run.labels},
                      "needs (360, 10)"),
    "negative": (lambda run, h: {"probs": np.where(np.arange(10) == 0, -0.02, h) + np.where(
        np.arange(10) == 1, 0.04, 0), "y": run.labels}, "negative values"),
    "not normalised": (lambda run, h: {"probs": h * 1.1, "y": run.labels}, "do not sum to 1"),
    "wrong labels": (lambda run, h: {"probs": h, "y": (run.labels + 1) % 10}, "does not equal the test labels"),
    "no labels": (lambda run, h: {"probs": h}, "no 'y'"),
    "no probs": (lambda run, h: {"counts": h}, "no 'probs'"),
    "nan": (lambda run, h: {"probs": np.where(np.arange(10) == 3, np.nan, h), "y": run.labels}, "non-finite"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_annotator_files_are_refused_with_the_reason(demo_store, tmp_path, monkeypatch, case):
    run = demo_store.get(None)
    make, words = BAD[case]
    monkeypatch.setenv(HUMAN_LABELS_ENV, str(_write(tmp_path / "h.npz", **make(run, _good(run)))))
    found = annotations(run)
    assert found.probs is None and human_probs(run) is None and human_entropy(run) is None
    assert words in found.problem and str(tmp_path / "h.npz") in found.problem


def test_a_fitting_annotator_file_is_used_and_garbage_refused(demo_store, tmp_path, monkeypatch):
    run = demo_store.get(None)
    monkeypatch.setenv(HUMAN_LABELS_ENV, str(_write(tmp_path / "h.npz", probs=_good(run), y=run.labels)))
    assert np.allclose(human_probs(run), _good(run))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    monkeypatch.setenv(HUMAN_LABELS_ENV, str(tmp_path / "junk.npz"))
    assert "cannot be read as an .npz" in annotations(run).problem
    monkeypatch.setenv(HUMAN_LABELS_ENV, str(tmp_path / "missing.npz"))
    assert "cannot be read" in annotations(run).problem
    monkeypatch.delenv(HUMAN_LABELS_ENV)
    assert annotations(run).source is None and human_probs(run) is None  # digits: nothing beside its data


def test_cli_takes_the_human_labels_file():
    from xai_dashboard.cli import build_parser

    assert build_parser().parse_args(["--human-labels", "h.npz"]).human_labels == "h.npz"
