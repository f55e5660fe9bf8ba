"""How good and how fast a model is: classification scores on labelled rows, as a JSON-ready
dict (scikit-learn), and the one latency timer (`median_ms`) that the torch and ONNX latencies
of a model use."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, the per-class report and a labelled confusion matrix.

    >>> s = classification_scores(np.array([0, 1, 1]), np.array([0, 1, 0]), ("blues", "jazz"))
    >>> s["accuracy"], s["confusion_matrix"]["labels"], s["confusion_matrix"]["rows"]
    (0.6667, ['blues', 'jazz'], [[1, 0], [1, 1]])
    """
    from sklearn.metrics import accuracy_score, classification_report, f1_score   # lazy: scikit-learn (0.5 s) only when scores are made

    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                         zero_division=0)), 4),
        "n": int(len(y_true)),
        "per_class": _rounded(report),
        "confusion_matrix": confusion(y_true, y_pred, classes),
    }


# Past this many classes report.json's confusion matrix lists its non-zero cells only: a full
# one grows with the square of the classes (5,000 classes: 25 million numbers)
DENSE_MATRIX_MAX_CLASSES = 200


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    """The labelled confusion matrix: `rows` (true class, then predicted class, both in `labels`
    order), or past DENSE_MATRIX_MAX_CLASSES classes `cells`, the non-zero ones as [true,
    predicted, count], in that order.

    >>> confusion(np.array([0, 1, 1]), np.array([0, 1, 0]), ("a", "b"))["rows"]
    [[1, 0], [1, 1]]
    """
    n = len(classes)
    pairs = np.asarray(y_true, np.int64) * n + np.asarray(y_pred, np.int64)
    if n <= DENSE_MATRIX_MAX_CLASSES:
        rows = np.bincount(pairs, minlength=n * n).reshape(n, n)
        return {"labels": list(classes), "rows": rows.tolist()}
    cells, counts = np.unique(pairs, return_counts=True)
    return {"labels": list(classes),
            "cells": [[int(c // n), int(c % n), int(k)] for c, k in zip(cells, counts)]}


def class_recalls(matrix: dict) -> tuple[np.ndarray, np.ndarray]:
    """(test rows, rows predicted right) per class of a `confusion` matrix, dense or not."""
    n = len(matrix["labels"])
    if "rows" in matrix:
        rows = np.asarray(matrix["rows"], np.int64).reshape(n, n)
        return rows.sum(axis=1), np.diag(rows).copy()
    cells = np.asarray(matrix["cells"], np.int64).reshape(-1, 3)
    support = np.bincount(cells[:, 0], weights=cells[:, 2], minlength=n).astype(np.int64)
    right = cells[cells[:, 0] == cells[:, 1]]
    correct = np.bincount(right[:, 0], weights=right[:, 2], minlength=n).astype(np.int64)
    return support, correct


def metric_scores(task: str, outputs: np.ndarray, y: np.ndarray, n_classes: int = 0) -> dict[str, float]:
    """Every metric of `task` (models.validation.METRICS) on labelled rows, rounded to 4 places:
    a classifier's logits [N, C] or a regression's predictions [N, 1] against y. ROC AUC only
    for two classes."""
    import torch   # lazy: predict imports this module and runs the onnx backend without torch

    from gsearch.models.validation import METRICS, score   # lazy: torch, as above

    out = torch.as_tensor(np.asarray(outputs, np.float32))[None]
    truth = torch.as_tensor(np.asarray(y))[None]
    return {name: round(float(score(name, out, truth)[0]), 4) for name, metric in METRICS.items()
            if metric.task == task and metric.classes in (None, n_classes)}


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """A regression's test report: RMSE, MAE, R^2, the rows, and each row's actual and predicted
    value (the report's predicted-against-actual plot)."""
    scores = metric_scores("regression", np.asarray(y_pred, np.float32)[:, None], y_true)
    return {**scores, "n": int(len(y_true)),
            "actual": [round(float(v), 6) for v in y_true],
            "predicted": [round(float(v), 6) for v in y_pred]}


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(float(value), 4) if isinstance(value, float) else value


def median_ms(call: Callable[[], object], *, warmup: int, repeats: int) -> float:
    """Median milliseconds of `call()` over `repeats` timed calls after `warmup` untimed ones,
    rounded to 0.1 microsecond.

    >>> median_ms(lambda: sum(range(10)), warmup=2, repeats=5) < 1.0
    True
    """
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 4)
