"""A stress test on ``--images N`` (a class-stratified sample) says so: its accuracies weigh the classes as the
sample does, so ``precompute stress`` must not print them as if they were the run's test accuracy."""
from __future__ import annotations

import numpy as np
from precompute_helpers import command_on_copy, demo_copy
from sklearn.metrics import balanced_accuracy_score

from trainer.rundir import load_run
from xai_dashboard.stress_file import load_stress, sample_note

N = 20  # 2 of each of the demo's 10 classes


def _sampled_stress(tmp_path, capsys) -> tuple[dict, int, list[str]]:
    """``precompute stress --images N`` on a digits-demo copy: (the stored file, the run's test images, printed lines)."""
    source = demo_copy(tmp_path / "source", "stress.npz")
    copy, status, out = command_on_copy(source, tmp_path, capsys, "stress", "--images", str(N))
    assert status == 0
    meta = load_run(copy).meta
    data, note = load_stress(copy, meta)
    assert note == "" and len(data["index"]) == N
    return data, meta["dataset"]["num_test"], out


def test_a_stratified_sample_is_named_in_the_report(tmp_path, capsys):
    data, num_test, out = _sampled_stress(tmp_path, capsys)
    assert out[-2] == (f"images: a class-stratified sample of {N} of the {num_test} test images, 2 per class: "
                       "every class weighs the same, so these accuracies are balanced accuracies (mean "
                       "per-class accuracy), not the run's test accuracy")
    clean = float(out[-1].split("clean ")[1].split(" %")[0])
    # the claim: with equal counts, the printed clean accuracy is the sample's balanced accuracy
    assert clean == round(100 * balanced_accuracy_score(data["label"], data["clean_pred"]), 2)

    uneven = {"index": data["index"][1:], "label": data["label"][1:]}  # one class now has one image
    assert "1 to 2 per class" in sample_note(uneven, num_test)
    assert sample_note(data, N) == ""  # every test image: nothing to say


def test_the_stress_view_says_its_images_are_a_sample(tmp_path, capsys):
    """The line under the heatmap carries the same words as the command's report, and nothing for a full test set."""
    from xai_dashboard.stress_file import accuracy_table
    from xai_dashboard.views.stress import summary_text

    data, num_test, _ = _sampled_stress(tmp_path, capsys)
    text = summary_text(data, accuracy_table(data), None, num_test)
    assert text.endswith(f" Images: {sample_note(data, num_test)}.")
    assert "class-stratified sample of 20" in text
    assert "Images:" not in summary_text(data, accuracy_table(data), None, N)
