"""What a study optimizes: its validation score alone (accuracy, or the metric --metric
chose), or that score against a deployment cost.

`OBJECTIVES` is the one registry: name -> metric name shown by the dashboard, direction, how
the value is taken from a trained trial (the latency with models.mlp.torch_latency_ms), and the
trial attribute that holds it. Validation accuracy always comes first, so that
trials report and are pruned on their accuracy curves whatever else the study weighs.

A study records its objectives and limits (`Objectives`, a study user attribute, guarded on
resume like the protocol). Limits are Optuna constraints (`Trial.set_constraint`): a trial
over a limit is kept, marked infeasible, and never picked (selection.py ranks and picks).

In a multi-objective study Optuna refuses `Trial.report` (and TPE cannot rank pruned trials
that carry intermediate values there), so each trial's accuracy curve is kept in the trial
system attribute records.CURVE instead, and `score_trial` turns any trial back into the
single-objective trial a pruner or a plot expects.

>>> Objectives.parse("accuracy,params").describe()
'maximize validation accuracy, minimize parameters'
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import optuna
import torch

from gsearch import GsearchError
from gsearch.models.mlp import torch_latency_ms
from gsearch.models.validation import METRICS
from gsearch.search import records

TrialState = optuna.trial.TrialState
FrozenTrial = optuna.trial.FrozenTrial


@dataclass(frozen=True)
class Measured:
    """What a finished trial offers the objectives: its accuracy, size and trained model."""

    accuracy: float
    n_params: int
    module: Callable[[], torch.nn.Module]   # the trained model, built on demand
    row: np.ndarray                          # one input row, for timing


@dataclass(frozen=True)
class Objective:
    metric: str                                   # the dashboard's name for it
    direction: str                                # "maximize" or "minimize"
    compute: Callable[[Measured], float]
    attr: str | None                              # the trial user attribute holding it
    count: bool = False                           # a whole number (shown as 12,345)

    def show(self, value: float) -> str:
        return f"{value:,.0f}" if self.count else f"{value:.4g}"


OBJECTIVES: dict[str, Objective] = {
    # the trial's value (the mean over its folds under --cv K); no user attribute of its own
    "accuracy": Objective("validation accuracy", "maximize", lambda m: m.accuracy, None),
    # trainable parameters: fixed by the configuration, known before training
    "params": Objective("parameters", "minimize", lambda m: float(m.n_params), records.N_PARAMS,
                        count=True),
    # CPU milliseconds to classify one row with the trained model (models.mlp.torch_latency_ms)
    "latency": Objective("latency ms", "minimize",
                         lambda m: torch_latency_ms(m.module(), m.row), records.LATENCY_MS),
}
# limit option -> the objective it bounds
LIMITS = {"max_params": "params", "max_latency_ms": "latency"}


@dataclass(frozen=True)
class Objectives:
    """A study's objectives and its limits. The first objective is its score, named
    "accuracy" whatever the study's `metric` (models.validation.METRICS: accuracy by default,
    or e.g. balanced_accuracy, rmse): the validation score every trial reports, is pruned on
    and is ranked by, maximized or minimized as the metric says; then at most one cost."""

    names: tuple[str, ...] = ("accuracy",)
    max_params: int | None = None
    max_latency_ms: float | None = None
    metric: str = "accuracy"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise GsearchError(f"unknown --metric {self.metric!r}; use one of {', '.join(METRICS)}")
        names = tuple("accuracy" if n == "metric" else n for n in self.names)
        object.__setattr__(self, "names", names)
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown:
            raise GsearchError(f"unknown objective {unknown[0]!r}; use accuracy, or accuracy and "
                               f"one of {', '.join(n for n in OBJECTIVES if n != 'accuracy')}")
        if not names or names[0] != "accuracy" or len(names) > 2 or len(set(names)) != len(names):
            raise GsearchError(f"--objectives {','.join(names)!r}: use accuracy, accuracy,params "
                               "or accuracy,latency (accuracy first, at most one cost)")
        for limit in LIMITS:
            value = getattr(self, limit)
            if value is not None and not value > 0:
                raise GsearchError(f"--{limit.replace('_', '-')} must be positive, got {value}")

    @classmethod
    def parse(cls, text: str, *, max_params: int | None = None,
              max_latency_ms: float | None = None, metric: str = "accuracy") -> "Objectives":
        """--objectives: "accuracy" (or "metric": the study's --metric), then a cost."""
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        return cls(names, max_params, max_latency_ms, metric)

    # -- what the study records ------------------------------------------------------------

    def to_dict(self) -> dict:
        data = {**asdict(self), "names": list(self.names)}
        if self.metric == "accuracy":   # as studies made before --metric recorded it
            del data["metric"]
        return data

    @classmethod
    def of(cls, study: optuna.Study) -> "Objectives":
        """What a study recorded (accuracy alone for a study made before objectives)."""
        recorded = study.user_attrs.get(records.OBJECTIVES) or {}
        return cls(tuple(recorded.get("names", ("accuracy",))), recorded.get("max_params"),
                   recorded.get("max_latency_ms"), recorded.get("metric", "accuracy"))

    def check(self, study: optuna.Study) -> None:
        """Refuse to resume a study with other objectives or limits than it was made with."""
        recorded = Objectives.of(study)
        if recorded != self:
            raise GsearchError(f"study '{study.study_name}' optimizes {recorded.options()}, this "
                               f"run asks for {self.options()}; use the same options, or a new "
                               "--study name")

    def record(self, study: optuna.Study) -> None:
        study.set_user_attr(records.OBJECTIVES, self.to_dict())
        study.set_metric_names([self.title(n) for n in self.names])

    # -- descriptions ----------------------------------------------------------------------

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    @property
    def maximize(self) -> bool:
        """Whether a higher score is better (the metric's direction)."""
        return METRICS[self.metric].maximize

    @property
    def score_title(self) -> str:
        """The score in words: "validation accuracy", "validation RMSE", ..."""
        return f"validation {METRICS[self.metric].title}"

    def title(self, name: str) -> str:
        """An objective's name for the dashboard and reports."""
        return self.score_title if name == "accuracy" else OBJECTIVES[name].metric

    def direction(self, name: str) -> str:
        return METRICS[self.metric].direction if name == "accuracy" else OBJECTIVES[name].direction

    @property
    def directions(self) -> list[str]:
        return [self.direction(n) for n in self.names]

    def gain(self, trial: FrozenTrial) -> float:
        """A completed trial's score, oriented so that higher is better (ranking, fronts)."""
        return score_of(trial) if self.maximize else -score_of(trial)

    @property
    def cost(self) -> str | None:
        """The cost objective's name (None when accuracy is the only objective)."""
        return self.names[1] if self.multi else None

    def limits(self) -> dict[str, float]:
        """Objective name -> its upper limit, for the limits that are set."""
        return {LIMITS[k]: getattr(self, k) for k in LIMITS if getattr(self, k) is not None}

    def options(self) -> str:
        text = (f"--metric {self.metric} " if self.metric != "accuracy" else "") + \
            f"--objectives {','.join(self.names)}"
        for key in LIMITS:
            if getattr(self, key) is not None:
                text += f" --{key.replace('_', '-')} {getattr(self, key)}"
        return text

    def describe(self) -> str:
        return ", ".join(f"{self.direction(n)} {self.title(n)}" for n in self.names)

    # -- a finished trial ------------------------------------------------------------------

    def needed(self) -> list[str]:
        """The measurements a trial needs: its objectives and the limited quantities."""
        return list(dict.fromkeys([*self.names, *self.limits()]))

    def measure(self, measured: Measured) -> dict[str, float]:
        """Objective name -> value, for the objectives and limits of this study."""
        return {name: OBJECTIVES[name].compute(measured) for name in self.needed()}

    def constraints(self, values: dict[str, float]) -> dict[str, float]:
        """Optuna constraint values (feasible when <= 0): the amount over each limit."""
        return {f"max_{name}": values[name] - limit for name, limit in self.limits().items()}


# -- reading trials ---------------------------------------------------------------------------

def score_of(trial: FrozenTrial) -> float:
    """A completed trial's validation score, in its metric's units (its value, or its first
    value)."""
    return trial.values[0]


def cost_of(trial: FrozenTrial) -> float:
    return trial.values[1]


def feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def curve(trial: FrozenTrial) -> dict[int, float]:
    """A trial's validation score per epoch, whichever way the study kept it."""
    kept = trial.system_attrs.get(records.CURVE)
    return dict(enumerate(kept)) if kept is not None else dict(trial.intermediate_values)


def score_trial(trial: FrozenTrial) -> FrozenTrial:
    """The trial as a single-objective study of its score would hold it: its curve as
    intermediate values, its score as its value, and a pruned trial's value its last reported
    score (as Optuna's tell gives one). Trials of a single-objective study come back as they
    are."""
    if records.CURVE not in trial.system_attrs:
        return trial
    values = curve(trial)
    single = copy.copy(trial)
    single.intermediate_values = values
    if trial.state == TrialState.COMPLETE:
        single.values = [score_of(trial)]
    elif trial.state == TrialState.PRUNED and values:
        single.values = [values[max(values)]]
    else:
        single.values = None
    return single


def score_study(study: optuna.Study) -> optuna.Study:
    """An in-memory single-objective copy of a study (its score, curves as intermediate
    values), for the plots written for one objective. A single-objective study as it is."""
    if len(study.directions) == 1:
        return study
    copy_ = optuna.create_study(study_name=study.study_name,
                                direction=Objectives.of(study).direction("accuracy"),
                                storage=optuna.storages.InMemoryStorage())
    trials = [score_trial(t) for t in study.get_trials(deepcopy=False)
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    copy_.add_trials([t for t in trials if t.state != TrialState.PRUNED or t.values is not None])
    for key, value in study.user_attrs.items():
        if key != records.OBJECTIVES:   # the copy has one objective
            copy_.set_user_attr(key, value)
    return copy_
