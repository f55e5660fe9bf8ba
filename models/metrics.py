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
