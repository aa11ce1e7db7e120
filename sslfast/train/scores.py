"""Downstream scores (GLUE's): accuracy, F1 (binary: of the positive class; else macro), Matthews
correlation, Pearson and Spearman correlations, computed with scikit-learn and SciPy."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sslfast.constants import IGNORE_INDEX

__all__ = ["task_scores", "SCORES"]

SCORES = ("accuracy", "f1", "mcc", "pearson", "spearman")


def task_scores(kind: str, predictions: Sequence, labels: Sequence, num_labels: int) -> dict:
    """Every score of a task ``kind`` (classification / token-classification: class ids; regression:
    floats). Token classification flattens the words (labels of ``-100`` are not words and are dropped)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    if labels.size == 0:
        raise ValueError("no examples to score")
    if kind == "regression":
        from scipy.stats import pearsonr, spearmanr
        constant = np.ptp(predictions) == 0 or np.ptp(labels) == 0
        return {"pearson": 0.0 if constant else float(pearsonr(predictions, labels)[0]),
                "spearman": 0.0 if constant else float(spearmanr(predictions, labels)[0]),
                "mse": float(np.mean((predictions - labels) ** 2))}
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    keep = labels != IGNORE_INDEX
    predictions, labels = predictions[keep], labels[keep]
    binary = num_labels == 2 and kind == "classification"
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, average="binary" if binary else "macro", zero_division=0)),
            "mcc": float(matthews_corrcoef(labels, predictions))}
