"""Honest uncertainty for an exported model: a classifier's probabilities calibrated by
temperature scaling, and split-conformal prediction sets (a classifier) or intervals (a
regression) at a level the user picks, both fitted on a calibration split the model never
trained on, and their coverage measured on the test split.

Export (search.export) trains calibration copies of the exported members on the training rows
alone and scores them on the validation rows: the temperature T minimizes the negative
log-likelihood of the members' mean probability at logits / T; the conformal threshold is the
ceil((n + 1) * level) / n quantile of the scores 1 - p(true class) (a classifier: a class is in a
row's set when its probability is at least 1 - that quantile) or |y - prediction| (a
regression: the interval is the prediction plus or minus it). The exported model, retrained on
train+validation, carries T in its last layers; the split-conformal guarantee (coverage at
least `level` on exchangeable rows) is the calibration copies', so the export's report says what
the exported model covered on the test split.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 3, 500)
>>> logits = 4.0 * np.eye(3)[y] + rng.normal(0, 2.5, (500, 3))   # overconfident by 2x
>>> temperature(logits[None] * 2, y) > 1.5
True
>>> q = conformal_threshold(np.abs(rng.normal(size=1000)), 0.9)
>>> round(q, 2)
1.66
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_LEVEL = 0.9
ECE_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """What an export records of its calibration: the conformal `level` and `threshold` (a
    classifier's least probability for a class to be in a set, or a regression's interval
    half-width), the `temperature` folded into its last layers, and on the test split the
    sets' or intervals' `coverage` and mean `size` (classes in a set, or interval width) and the
    expected calibration error before and after the temperature."""

    level: float
    threshold: float
    temperature: float = 1.0
    calibration_rows: int | None = None
    coverage: float | None = None
    size: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        calibration = cls(**data)
        if not (0 < calibration.level < 1 and math.isfinite(calibration.threshold)
                and calibration.temperature > 0):
            raise ValueError("calibration holds a level outside (0, 1), or a threshold or "
                             "temperature that is not a positive finite number")
        return calibration


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


# Above this many logits ([K, N, C]: members, rows, classes) calibration computes in float32,
# in place: 5,000 classes made float64 temporaries of gigabytes and a temperature search of
# half a minute; below, float64 as always
FLOAT64_MAX_LOGITS = 1 << 22


def _working(member_logits: np.ndarray) -> np.ndarray:
    """The logits as a new float array (float32 above FLOAT64_MAX_LOGITS), each row shifted by
    its largest value (so every entry is <= 0 and exp never overflows)."""
    logits = np.asarray(member_logits)
    z = np.array(logits, np.float64 if logits.size <= FLOAT64_MAX_LOGITS else np.float32)
    z -= z.max(axis=-1, keepdims=True)
    return z


def mean_probabilities(member_logits: np.ndarray, t: float = 1.0) -> np.ndarray:
    """Members' logits [K, N, C] -> the mean of their probabilities at logits / t [N, C]."""
    z = _working(member_logits)
    z *= z.dtype.type(1.0 / t)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z.mean(axis=0)


def _true_class(shifted: np.ndarray, true: np.ndarray, t: float) -> np.ndarray:
    """Per row the members' mean probability of the true class at logits / t, from _working's
    shifted logits and their true-class entries [K, N]."""
    z = shifted * shifted.dtype.type(1.0 / t)
    np.exp(z, out=z)
    log_norm = np.log(z.sum(axis=-1))
    return np.exp(true / t - log_norm).mean(axis=0)


def true_class_probabilities(member_logits: np.ndarray, y: np.ndarray, t: float = 1.0) -> np.ndarray:
    """mean_probabilities(member_logits, t)[rows, y], without the [N, C] probabilities."""
    shifted = _working(member_logits)
    return _true_class(shifted, shifted[:, np.arange(len(y)), y], t)


def temperature(member_logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [e^-3, e^3] that minimizes the negative log-likelihood of the members' mean
    probability at logits / T on labelled rows (one T for an ensemble)."""
    from scipy.optimize import minimize_scalar   # lazy: predict imports this module

    shifted = _working(member_logits)   # once, not per step of the search
    true = shifted[:, np.arange(len(y)), y].astype(np.float64)

    def nll(log_t: float) -> float:
        p = _true_class(shifted, true, math.exp(log_t))
        return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())

    return float(math.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def conformal_threshold(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile of calibration scores: the ceil((n + 1) level) / n
    empirical quantile (the largest score when that exceeds 1)."""
    n = len(scores)
    q = min(1.0, math.ceil((n + 1) * level) / n)
    return float(np.quantile(np.asarray(scores, np.float64), q, method="higher"))


def prediction_sets(probabilities: np.ndarray, threshold: float) -> list[list[int]]:
    """Per row the classes whose probability is at least `threshold`, most likely first (the
    most likely alone where none is)."""
    sets = []
    for p in probabilities:
        order = np.argsort(-p, kind="stable")
        sets.append([int(c) for c in order if p[c] >= threshold] or [int(order[0])])
    return sets


def set_coverage(probabilities: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """(the share of rows whose prediction_sets hold their class, the sets' mean size), from
    the [N, C] probabilities at once: a set is the classes at `threshold` or above, or the most
    likely class alone where none is."""
    inside = probabilities >= threshold
    counts = inside.sum(axis=1)
    rows = np.arange(len(y))
    covered = np.where(counts > 0, inside[rows, y], probabilities.argmax(axis=1) == y)
    return float(covered.mean()), float(np.maximum(counts, 1).mean())


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """The gap between confidence and accuracy, averaged over equal-width bins of the most
    likely class's probability, weighted by the rows in each bin."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def classifier_calibration(calibration_logits: np.ndarray, y_cal: np.ndarray, test_logits: np.ndarray,
                           y_test: np.ndarray, level: float) -> Calibration:
    """Temperature and conformal sets from the calibration members' logits [K, N, C] on the
    calibration rows; coverage, set size and calibration error of the exported members' logits
    [K, M, C] on the test rows."""
    t = temperature(calibration_logits, y_cal)
    calibrated = true_class_probabilities(calibration_logits, y_cal, t)
    threshold = 1.0 - conformal_threshold(1.0 - calibrated, level)
    before, after = mean_probabilities(test_logits), mean_probabilities(test_logits, t)
    covered, size = set_coverage(after, y_test, threshold)
    return Calibration(level, round(threshold, 6), round(t, 6), len(y_cal), round(covered, 4),
                       round(size, 4),
                       round(expected_calibration_error(before, y_test), 4),
                       round(expected_calibration_error(after, y_test), 4))


def regression_calibration(calibration_predictions: np.ndarray, y_cal: np.ndarray,
                           test_predictions: np.ndarray, y_test: np.ndarray, level: float) -> Calibration:
    """Conformal intervals from the calibration predictions' absolute errors; their coverage
    and width on the test rows."""
    half = conformal_threshold(np.abs(y_cal - calibration_predictions), level)
    covered = np.mean(np.abs(y_test - test_predictions) <= half)
    return Calibration(level, round(half, 6), calibration_rows=len(y_cal),
                       coverage=round(float(covered), 4), size=round(2 * half, 6))
