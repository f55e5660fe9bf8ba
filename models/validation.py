"""The metrics a model is scored by, batched over a population's members: `METRICS`, one
registry of name -> task, direction and how it is computed from a validation split.

`score(name, outputs, y)` takes every member's outputs at once, [K, n, C] logits of a
classifier or [K, n, 1] predictions of a regression (in the target's own units), with the
labels [K, n] (int64 classes, or float targets), and returns one value per member [K]. The
same definitions score the test split of an export (models.metrics.metric_scores), so the
number a study optimizes is the number its export reports.

>>> import torch
>>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]]])
>>> y = torch.tensor([[0, 1, 1, 1]])
>>> [round(score(m, logits, y).item(), 3) for m in ("accuracy", "balanced_accuracy", "roc_auc")]
[0.75, 0.833, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

from gsearch import GsearchError

CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass(frozen=True)
class Metric:
    task: str           # the task it scores
    direction: str      # "maximize" or "minimize"
    title: str          # how reports name it
    classes: int | None = None   # a number of classes it needs (roc_auc: 2)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


METRICS: dict[str, Metric] = {
    "accuracy": Metric(CLASSIFICATION, "maximize", "accuracy"),
    "balanced_accuracy": Metric(CLASSIFICATION, "maximize", "balanced accuracy"),
    "macro_f1": Metric(CLASSIFICATION, "maximize", "macro-F1"),
    "log_loss": Metric(CLASSIFICATION, "minimize", "log loss"),
    "roc_auc": Metric(CLASSIFICATION, "maximize", "ROC AUC", classes=2),
    "rmse": Metric(REGRESSION, "minimize", "RMSE"),
    "mae": Metric(REGRESSION, "minimize", "MAE"),
    "r2": Metric(REGRESSION, "maximize", "R^2"),
}
DEFAULT_METRIC = {CLASSIFICATION: "accuracy", REGRESSION: "rmse"}


def check_metric(name: str, task: str, n_classes: int = 0) -> None:
    """A metric that can score this task (and number of classes), or the one line that says
    which can."""
    if name not in METRICS:
        raise GsearchError(f"unknown --metric {name!r}; use one of {', '.join(METRICS)}")
    metric = METRICS[name]
    fitting = ", ".join(n for n, m in METRICS.items() if m.task == task
                        and m.classes in (None, n_classes))
    if metric.task != task:
        raise GsearchError(f"--metric {name} scores a {metric.task}; this table's label makes a "
                           f"{task} (--task): use {fitting}")
    if metric.classes is not None and metric.classes != n_classes:
        raise GsearchError(f"--metric {name} needs {metric.classes} classes, the label has "
                           f"{n_classes}: use {fitting}")


def score(name: str, outputs, y):
    """Metric `name` of each member: outputs [K, n, C] (torch), labels [K, n] -> [K]."""
    from gsearch.models import _metric_ops   # lazy: torch; the CLI reads METRICS at start

    return getattr(_metric_ops, f"_{name}")(outputs, y)
