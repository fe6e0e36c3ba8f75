"""Readouts that carry signal for people never seen, beside the thesis's four-way cross-entropy.

On a person-disjoint split the four-way task is at chance for the thesis's CNN, while "any dementia vs none" keeps an
AUC of about 0.75-0.8. These functions turn one evaluation's class probabilities (and, where known, each slice's
person) into:

- ``dementia_auc``: ROC AUC of P(any dementia) = 1 - P(Non_Demented) per slice;
- ``dementia_auc_person``: the same per person, a person's slice probabilities averaged;
- ``person_accuracy``: four-way accuracy per person (the class of their averaged probabilities);
- ``people``: how many people the evaluation held.

AUCs are scikit-learn's. An AUC is NaN when the evaluation holds one kind only (no dementia, or only dementia).
The four-way metrics (loss, balanced accuracy, per-class recall, ECE) are ``train.metrics_from_proba``'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from mri_synth.data.types import CLASS_NAMES

NON_DEMENTED = CLASS_NAMES.index("Non_Demented")


def _auc(is_dementia: np.ndarray, p_dementia: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if is_dementia.all() or not is_dementia.any():
        return float("nan")
    return float(roc_auc_score(is_dementia, p_dementia))


def per_person(proba: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, groups: Sequence) -> pd.DataFrame:
    """One row per person: their class and their slices' mean class probabilities (``p0`` .. ``p3``)."""
    proba = np.asarray(proba, dtype=float)
    frame = pd.DataFrame(proba, columns=[f"p{c}" for c in range(proba.shape[1])])
    frame["label"], frame["person"] = np.asarray(labels), np.asarray(groups)
    if frame.groupby("person")["label"].nunique().max() > 1:
        raise ValueError("a person id carries slices of several classes: person ids must name one person each")
    return frame.groupby("person", sort=True).mean()


def dementia_readouts(proba: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                      groups: Sequence | None = None) -> dict[str, float]:
    """The dementia-vs-none AUC per slice and, given person ids, per person, and the per-person accuracy."""
    proba, labels = np.asarray(proba, dtype=float), np.asarray(labels)
    out = {"dementia_auc": _auc(labels != NON_DEMENTED, 1.0 - proba[:, NON_DEMENTED])}
    if groups is not None:
        people = per_person(proba, labels, groups)
        mean_p = people[[f"p{c}" for c in range(proba.shape[1])]].to_numpy()
        truth = people["label"].to_numpy().astype(int)
        out |= {"dementia_auc_person": _auc(truth != NON_DEMENTED, 1.0 - mean_p[:, NON_DEMENTED]),
                "person_accuracy": float((mean_p.argmax(1) == truth).mean()), "people": float(len(people))}
    return out
