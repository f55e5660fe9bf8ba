"""What a study optimizes: validation accuracy alone, or accuracy against a deployment cost.

`OBJECTIVES` is the one registry: name -> metric name shown by the dashboard, direction, and
how the value is taken from a trained trial. Validation accuracy always comes first, so that
trials report and are pruned on their accuracy curves whatever else the study weighs.

A study records its objectives and limits (`Objectives`, a study user attribute, guarded on
resume like the protocol). Limits are Optuna constraints (`Trial.set_constraint`): a trial
over a limit is kept, marked infeasible, and never picked.

In a multi-objective study Optuna refuses `Trial.report` (and TPE cannot rank pruned trials
that carry intermediate values there), so each trial's accuracy curve is kept in the trial
system attribute CURVE_ATTR instead, and `accuracy_trial` turns any trial back into the
single-objective trial a pruner or a plot expects.

>>> Objectives.parse("accuracy,params").describe()
'maximize validation accuracy, minimize parameters'
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import optuna
import torch

from gsearch import GsearchError

TrialState = optuna.trial.TrialState
FrozenTrial = optuna.trial.FrozenTrial

ATTR = "objectives"            # study user attribute: Objectives.to_dict()
CURVE_ATTR = "gsearch:curve"   # trial system attribute: accuracy per epoch (multi-objective)

# Latency: one single-row forward pass on the CPU, timed LATENCY_REPEATS times after
# LATENCY_WARMUP untimed calls; the median in milliseconds.
LATENCY_WARMUP, LATENCY_REPEATS = 20, 100


@dataclass(frozen=True)
class Measured:
    """What a finished trial offers the objectives: its accuracy, size and trained model."""

    accuracy: float
    n_params: int
    module: Callable[[], torch.nn.Module]   # the trained model, built on demand
    row: np.ndarray                          # one input row, for timing


def torch_latency_ms(model: torch.nn.Module, row: np.ndarray) -> float:
    """Median milliseconds of a single-row forward pass on the CPU, in torch's current
    thread setting, after warm-up."""
    model = model.cpu().eval()
    x = torch.as_tensor(np.asarray(row, np.float32).reshape(1, -1))
    times = []
    with torch.inference_mode():
        for i in range(LATENCY_WARMUP + LATENCY_REPEATS):
            start = time.perf_counter()
            model(x)
            if i >= LATENCY_WARMUP:
                times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 4)


@dataclass(frozen=True)
class Objective:
    metric: str                                   # the dashboard's name for it
    direction: str                                # "maximize" or "minimize"
    compute: Callable[[Measured], float]
    attr: str                                     # the trial user attribute holding it
    count: bool = False                           # a whole number (shown as 12,345)

    def show(self, value: float) -> str:
        return f"{value:,.0f}" if self.count else f"{value:.4g}"


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective("validation accuracy", "maximize", lambda m: m.accuracy, "accuracy"),
    # trainable parameters: fixed by the configuration, known before training
    "params": Objective("parameters", "minimize", lambda m: float(m.n_params), "n_params",
                        count=True),
    # CPU milliseconds to classify one row with the trained model (torch_latency_ms)
    "latency": Objective("latency ms", "minimize",
                         lambda m: torch_latency_ms(m.module(), m.row), "latency_ms"),
}
# limit option -> the objective it bounds
LIMITS = {"max_params": "params", "max_latency_ms": "latency"}


@dataclass(frozen=True)
class Objectives:
    """A study's objectives (accuracy first, then at most one cost) and its limits."""

    names: tuple[str, ...] = ("accuracy",)
    max_params: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self):
        names = self.names
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
              max_latency_ms: float | None = None) -> "Objectives":
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        return cls(names, max_params, max_latency_ms)

    # -- what the study records ------------------------------------------------------------

    def to_dict(self) -> dict:
        return {**asdict(self), "names": list(self.names)}

    @classmethod
    def of(cls, study: optuna.Study) -> "Objectives":
        """What a study recorded (accuracy alone for a study made before objectives)."""
        recorded = study.user_attrs.get(ATTR) or {}
        return cls(tuple(recorded.get("names", ("accuracy",))), recorded.get("max_params"),
                   recorded.get("max_latency_ms"))

    def check(self, study: optuna.Study) -> None:
        """Refuse to resume a study with other objectives or limits than it was made with."""
        recorded = Objectives.of(study)
        if recorded != self:
            raise GsearchError(f"study '{study.study_name}' optimizes {recorded.options()}, this "
                               f"run asks for {self.options()}; use the same options, or a new "
                               "--study name")

    def record(self, study: optuna.Study) -> None:
        study.set_user_attr(ATTR, self.to_dict())
        study.set_metric_names([OBJECTIVES[n].metric for n in self.names])

    # -- descriptions ----------------------------------------------------------------------

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[n].direction for n in self.names]

    @property
    def cost(self) -> str | None:
        """The cost objective's name (None when accuracy is the only objective)."""
        return self.names[1] if self.multi else None

    def limits(self) -> dict[str, float]:
        """Objective name -> its upper limit, for the limits that are set."""
        return {LIMITS[k]: getattr(self, k) for k in LIMITS if getattr(self, k) is not None}

    def options(self) -> str:
        text = f"--objectives {','.join(self.names)}"
        for key in LIMITS:
            if getattr(self, key) is not None:
                text += f" --{key.replace('_', '-')} {getattr(self, key)}"
        return text

    def describe(self) -> str:
        return ", ".join(f"{OBJECTIVES[n].direction} {OBJECTIVES[n].metric}" for n in self.names)

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

def accuracy_of(trial: FrozenTrial) -> float:
    """A completed trial's validation accuracy (its value, or its first value)."""
    return trial.values[0]


def cost_of(trial: FrozenTrial) -> float:
    return trial.values[1]


def feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def curve(trial: FrozenTrial) -> dict[int, float]:
    """A trial's validation accuracy per epoch, whichever way the study kept it."""
    kept = trial.system_attrs.get(CURVE_ATTR)
    return dict(enumerate(kept)) if kept is not None else dict(trial.intermediate_values)


def accuracy_trial(trial: FrozenTrial) -> FrozenTrial:
    """The trial as a single-objective (maximize accuracy) study would hold it: its curve as
    intermediate values, its accuracy as its value, and a pruned trial's value its last
    reported accuracy (as Optuna's tell gives one). Trials of a single-objective study come
    back as they are."""
    if CURVE_ATTR not in trial.system_attrs:
        return trial
    values = curve(trial)
    single = copy.copy(trial)
    single.intermediate_values = values
    if trial.state == TrialState.COMPLETE:
        single.values = [accuracy_of(trial)]
    elif trial.state == TrialState.PRUNED and values:
        single.values = [values[max(values)]]
    else:
        single.values = None
    return single


def accuracy_study(study: optuna.Study) -> optuna.Study:
    """An in-memory single-objective copy of a study (accuracy, curves as intermediate
    values), for the plots written for one objective. A single-objective study as it is."""
    if len(study.directions) == 1:
        return study
    copy_ = optuna.create_study(study_name=study.study_name, direction="maximize",
                                storage=optuna.storages.InMemoryStorage())
    trials = [accuracy_trial(t) for t in study.get_trials(deepcopy=False)
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    copy_.add_trials([t for t in trials if t.state != TrialState.PRUNED or t.values is not None])
    for key, value in study.user_attrs.items():
        if key != ATTR:   # the copy has one objective
            copy_.set_user_attr(key, value)
    return copy_


# -- picking one trial of a multi-objective study ----------------------------------------------

PICKS = ("knee", "accuracy", "smallest-within")
DEFAULT_WITHIN = 0.01


@dataclass(frozen=True)
class Pick:
    """How export-best chooses one trial: rule "knee", "accuracy", "smallest-within"
    (with `within`), or "trial" (with `number`)."""

    rule: str = "knee"
    within: float = DEFAULT_WITHIN
    number: int | None = None
    notes: list[str] = field(default_factory=list, compare=False)

    def describe(self) -> str:
        if self.rule == "smallest-within":
            return f"smallest-within {self.within:g}"
        if self.rule == "trial":
            return f"trial {self.number}"
        return self.rule


def parse_pick(text: str | None, extra: list[str] = ()) -> Pick | None:
    """'knee', 'accuracy', 'smallest-within 0.01' (the number may also be a separate word or
    follow '='). None stays None: the command's default."""
    if text is None:
        if extra:
            raise GsearchError(f"unexpected argument {extra[0]!r}; export-best takes options only")
        return None
    words = text.replace("=", " ").replace(":", " ").split() + list(extra)
    rule = words[0] if words else ""
    if rule not in PICKS:
        raise GsearchError(f"unknown --pick {text!r}; use knee, accuracy or smallest-within D "
                           "(e.g. --pick smallest-within 0.01)")
    if rule != "smallest-within":
        if len(words) > 1:
            raise GsearchError(f"--pick {rule} takes no value, got {' '.join(words[1:])!r}")
        return Pick(rule)
    if len(words) > 2:
        raise GsearchError(f"--pick smallest-within takes one number, got {' '.join(words[1:])!r}")
    try:
        within = float(words[1]) if len(words) == 2 else DEFAULT_WITHIN
    except ValueError:
        raise GsearchError(f"--pick smallest-within needs an accuracy margin such as 0.01, got "
                           f"{words[1]!r}") from None
    if not 0 <= within < 1:
        raise GsearchError(f"--pick smallest-within takes a margin in [0, 1), got {within}")
    return Pick("smallest-within", within=within)


def candidates(study: optuna.Study) -> list[FrozenTrial]:
    """Completed feasible trials: the only ones a rule picks."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise GsearchError(f"study '{study.study_name}' has no completed trial yet; "
                           "run 'gsearch run' until one completes")
    ok = [t for t in complete if feasible(t)]
    if not ok:
        raise GsearchError(f"study '{study.study_name}' has no completed trial within its limits "
                           f"({Objectives.of(study).options()}); run more trials, or "
                           "export one with --trial N")
    return ok


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials no other trial beats on both accuracy (higher) and cost (lower), by
    ascending cost."""
    ordered = sorted(trials, key=lambda t: (cost_of(t), -accuracy_of(t), t.number))
    front, best = [], -math.inf
    for t in ordered:
        if accuracy_of(t) > best:
            front.append(t)
            best = accuracy_of(t)
    return front


def knee(front: list[FrozenTrial]) -> FrozenTrial:
    """The knee of a Pareto front (ascending cost). Each trial's accuracy a and cost c are
    normalized over the front: a' = (a - a_min) / (a_max - a_min) and
    c' = (log c - log c_min) / (log c_max - log c_min) (costs span orders of magnitude).
    The cheapest trial is then (0, 0), the most accurate (1, 1), and the knee is the trial
    farthest above the line between them: the largest a' - c', ties to the more accurate.
    A front of one or two trials has no knee above that line: the most accurate is taken."""
    if len(front) <= 2:
        return front[-1]
    acc = np.array([accuracy_of(t) for t in front])
    cost = np.log(np.maximum([cost_of(t) for t in front], 1e-12))
    a = (acc - acc.min()) / (np.ptp(acc) or 1.0)
    c = (cost - cost.min()) / (np.ptp(cost) or 1.0)
    gain = a - c
    best = max(range(len(front)), key=lambda i: (round(float(gain[i]), 12), acc[i], -front[i].number))
    return front[best] if gain[best] > 1e-12 else front[-1]


def pick_trial(study: optuna.Study, pick: Pick) -> FrozenTrial:
    """The trial `pick` names. Rules consider completed feasible trials only; --trial N may
    name any completed trial (an infeasible one is noted in pick.notes)."""
    if pick.rule == "trial":
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        trial = trials.get(pick.number)
        if trial is None or trial.state != TrialState.COMPLETE:
            state = "does not exist" if trial is None else f"is {trial.state.name.lower()}"
            raise GsearchError(f"trial {pick.number} of study '{study.study_name}' {state}; "
                               "pass the number of a completed trial (see 'gsearch report')")
        if not feasible(trial):
            pick.notes.append(f"trial {trial.number} is over the study's limits {trial.constraints}")
        return trial
    ok = candidates(study)
    if pick.rule == "accuracy":
        key = (lambda t: (-accuracy_of(t), cost_of(t), t.number)) if len(study.directions) > 1 \
            else (lambda t: (-accuracy_of(t), t.number))
        return min(ok, key=key)
    if len(study.directions) == 1:
        raise GsearchError(f"--pick {pick.rule} needs a multi-objective study (gsearch run "
                           "--objectives accuracy,params); this one optimizes accuracy alone: "
                           "use --pick accuracy, --trial N or --ensemble K")
    if pick.rule == "knee":
        return knee(pareto_front(ok))
    best = max(accuracy_of(t) for t in ok)
    close = [t for t in ok if accuracy_of(t) >= best - pick.within - 1e-12]
    return min(close, key=lambda t: (cost_of(t), -accuracy_of(t), t.number))
