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
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score   # lazy: scikit-learn (0.5 s) only when scores are made

    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                         zero_division=0)), 4),
        "n": int(len(y_true)),
        "per_class": _rounded(report),
        # rows: true genre, columns: predicted genre, both in `labels` order
        "confusion_matrix": {"labels": list(classes),
                             "rows": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


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
