"""Humans against the model, as pure functions of (given labels, model probabilities, human probabilities).

Shapes: ``labels`` int64 ``(N,)``, ``probs`` (model) and ``human`` (people's label shares,
:mod:`.human_labels`) float ``(N, K)`` with rows summing to 1.

* Confusion matrices, both row-normalised, rows = given label: the model's counts its
  predictions; the humans' sums each image's label shares, i.e. it is the confusion matrix
  of every individual annotation with each image weighted equally.
* The slices (:data:`SLICES`) are defined by the named thresholds below.
* Calibration against people (Peterson et al. 2019 use the cross-entropy to the human
  distribution): cross-entropy, KL divergence and an ECE whose per-bin "accuracy" is the
  mean human share of the predicted class, beside the usual ECE on the hard labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .analysis import Predictions, confusion, reliability, row_normalise
from .human_labels import Annotations, entropy_bits

HUMANS_AGREE = 0.9     # people agree: at least this share chose the given label
HUMANS_SPLIT = 0.7     # people split: no class got this share of them
MODEL_CONFIDENT = 0.9  # the model is confident: its top class has at least this probability
MODEL_UNSURE = 0.6     # the model is unsure: its top class has less than this
ECE_BINS = 15          # as analysis.reliability
EPS = 1e-12            # model probabilities are clipped here before a log (float32 softmax underflows to 0)

# slice -> (title, definition shown in the page, order of its gallery)
SLICES = {
    "agree_model_wrong": ("Humans agree, model wrong",
                          f"at least {HUMANS_AGREE:.0%} of people chose the given label and the model predicts "
                          f"another class (real model errors)", "model's confidence, highest first"),
    "confident_split": ("Model confident, humans split",
                        f"the model gives its class at least {MODEL_CONFIDENT:.0%} and no class got "
                        f"{HUMANS_SPLIT:.0%} of people", "human entropy, highest first"),
    "disagree_given": ("Humans disagree with the given label",
                       "some other class got more people's votes than the given label",
                       "people's share of the given label, lowest first"),
    "both_unsure": ("Both unsure",
                    f"the model gives its top class less than {MODEL_UNSURE:.0%} and no class got "
                    f"{HUMANS_SPLIT:.0%} of people", "human + model entropy, highest first"),
}


def human_confusion(labels: np.ndarray, human: np.ndarray, k: int) -> np.ndarray:
    """``(K, K)`` float64: row ``i`` sums the label shares of the images labelled ``i`` (not normalised)."""
    out = np.zeros((k, k), dtype=np.float64)
    np.add.at(out, labels, human)
    return out


def offdiagonal_correlation(a: np.ndarray, b: np.ndarray) -> dict:
    """Pearson and Spearman correlation of the off-diagonal cells of two ``(K, K)`` matrices."""
    from scipy.stats import pearsonr, spearmanr

    off = ~np.eye(len(a), dtype=bool)
    return {"pearson": float(pearsonr(a[off], b[off]).statistic),
            "spearman": float(spearmanr(a[off], b[off]).statistic), "cells": int(off.sum())}


def slice_indices(labels: np.ndarray, probs: np.ndarray, human: np.ndarray) -> dict[str, np.ndarray]:
    """Test-set indices int64 ``(M,)`` of each slice of :data:`SLICES`, in the slice's gallery order."""
    n = np.arange(len(labels))
    preds, conf = probs.argmax(1), probs.max(1)
    h_given, h_top = human[n, labels], human.max(1)
    h_ent, m_ent = entropy_bits(human), entropy_bits(probs)
    members = {
        "agree_model_wrong": (h_given >= HUMANS_AGREE) & (preds != labels),
        "confident_split": (conf >= MODEL_CONFIDENT) & (h_top < HUMANS_SPLIT),
        "disagree_given": h_given < h_top,
        "both_unsure": (conf < MODEL_UNSURE) & (h_top < HUMANS_SPLIT),
    }
    keys = {"agree_model_wrong": -conf, "confident_split": -h_ent, "disagree_given": h_given,
            "both_unsure": -(h_ent + m_ent)}
    # lexsort: the last key sorts first; the index breaks ties, so the order is stable
    return {s: n[m][np.lexsort((n[m], keys[s][m]))] for s, m in members.items()}


def calibration(labels: np.ndarray, probs: np.ndarray, human: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """The model's calibration against people's label shares beside that against the hard labels.

    ``ece_human`` = Σ_b (1/N) |Σ_{i in b} (human_i[pred_i] − conf_i)| over uniform confidence bins;
    with one-hot ``human`` it is the usual ECE. Cross-entropies and KL in nats, means over images.
    """
    from scipy.stats import entropy

    n = np.arange(len(labels))
    preds, conf = probs.argmax(1), probs.max(1).astype(np.float64)
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], conf)  # calibration_curve's bins
    gap = np.bincount(bins, weights=human[n, preds] - conf, minlength=n_bins)
    model = np.clip(probs.astype(np.float64), EPS, 1.0)
    kl = entropy(human, model, axis=1)  # scipy normalises the clipped rows again
    return {
        "ece_hard": reliability(labels, probs, n_bins)["ece"],
        "ece_human": float(np.abs(gap).sum() / len(labels)),
        "ce_hard": float(-np.log(model[n, labels]).mean()),
        "ce_human": float((kl + entropy(human, axis=1)).mean()),
        "kl_human": float(kl.mean()),
        "human_entropy": float(entropy(human, axis=1).mean()),
        "agreement": float(human[n, preds].mean()),  # chance a random person agrees with the model
        "accuracy": float((preds == labels).mean()),
    }


@dataclass(frozen=True)
class Comparison:
    human_cm: np.ndarray     # (K, K) row-normalised
    model_cm: np.ndarray     # (K, K) row-normalised
    correlation: dict
    slices: dict[str, np.ndarray]
    calibration: dict
    human_entropy: np.ndarray  # (N,) bits
    model_entropy: np.ndarray  # (N,) bits


def compare(labels: np.ndarray, probs: np.ndarray, human: np.ndarray) -> Comparison:
    k = probs.shape[1]
    h_cm = row_normalise(human_confusion(labels, human, k))
    m_cm = row_normalise(confusion(labels, probs.argmax(1), k).astype(np.float64))
    return Comparison(h_cm, m_cm, offdiagonal_correlation(h_cm, m_cm), slice_indices(labels, probs, human),
                      calibration(labels, probs, human), entropy_bits(human), entropy_bits(probs))


@lru_cache(maxsize=8)
def comparison(p: Predictions, annotated: Annotations) -> Comparison:
    """:func:`compare` for a run, memoised on its content and the annotator file (held by identity)."""
    return compare(p.labels, p.probs, annotated.probs)
