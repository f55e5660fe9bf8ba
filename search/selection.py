"""Which trials a study offers: ranking and picking in one place.

Every choice of trials goes through here: the candidates (completed, within the study's
limits), the top K by validation value (export-best's ensemble, warm start), the rules that
pick one trial of a Pareto front (knee, accuracy, smallest-within D) or a trial by number,
and the front itself. Trials are ranked by their study value only (validation or CV
accuracy), never by a test score.

>>> parse_pick("smallest-within 0.02").describe()
'smallest-within 0.02'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import optuna

from gsearch import GsearchError
from gsearch.search import records
from gsearch.search.objectives import Objectives, cost_of, curve, feasible, score_of

TrialState = optuna.trial.TrialState
FrozenTrial = optuna.trial.FrozenTrial

# Measured with `gsearch evaluate` (docs/benchmarks.md): the top-5 ensemble beat the single
# best trial on split seeds 42/0/1 and tied it on fresh ones, so export-best averages 5.
DEFAULT_ENSEMBLE = 5

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


def pareto_front(trials: list[FrozenTrial], objectives: Objectives = Objectives()) -> list[FrozenTrial]:
    """The trials no other trial beats on both score (better) and cost (lower), by
    ascending cost."""
    gain = objectives.gain
    ordered = sorted(trials, key=lambda t: (cost_of(t), -gain(t), t.number))
    front, best = [], -math.inf
    for t in ordered:
        if gain(t) > best:
            front.append(t)
            best = gain(t)
    return front


def knee(front: list[FrozenTrial], objectives: Objectives = Objectives()) -> FrozenTrial:
    """The knee of a Pareto front (ascending cost). Each trial's score a (oriented: higher is
    better) and cost c are
    normalized over the front: a' = (a - a_min) / (a_max - a_min) and
    c' = (log c - log c_min) / (log c_max - log c_min) (costs span orders of magnitude).
    The cheapest trial is then (0, 0), the most accurate (1, 1), and the knee is the trial
    farthest above the line between them: the largest a' - c', ties to the more accurate.
    A front of one or two trials has no knee above that line: the most accurate is taken."""
    if len(front) <= 2:
        return front[-1]
    acc = np.array([objectives.gain(t) for t in front])
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
    objectives = Objectives.of(study)
    gain = objectives.gain
    if pick.rule == "accuracy":
        key = (lambda t: (-gain(t), cost_of(t), t.number)) if len(study.directions) > 1 \
            else (lambda t: (-gain(t), t.number))
        return min(ok, key=key)
    if len(study.directions) == 1:
        raise GsearchError(f"--pick {pick.rule} needs a multi-objective study (gsearch run "
                           "--objectives accuracy,params); this one optimizes accuracy alone: "
                           "use --pick accuracy, --trial N or --ensemble K")
    if pick.rule == "knee":
        return knee(pareto_front(ok, objectives), objectives)
    best = max(gain(t) for t in ok)
    close = [t for t in ok if gain(t) >= best - pick.within - 1e-12]
    return min(close, key=lambda t: (cost_of(t), -gain(t), t.number))


def top_trials(study: optuna.Study, k: int | None = 1) -> list[FrozenTrial]:
    """The k completed trials within the study's limits with the highest value (earlier
    trial first on ties); k=None: DEFAULT_ENSEMBLE, or every such trial when there are fewer."""
    complete = candidates(study)
    if k is None:
        k = min(DEFAULT_ENSEMBLE, len(complete))
    if k > len(complete):
        raise GsearchError(f"--ensemble {k} needs {k} completed trials, study "
                           f"'{study.study_name}' has {len(complete)}; run more trials or "
                           f"use --ensemble {len(complete)}")
    gain = Objectives.of(study).gain
    return sorted(complete, key=lambda t: (-gain(t), t.number))[:k]


def deadline_stopped(study: optuna.Study) -> list[FrozenTrial]:
    """The trials a --timeout stopped (pruned, reason "deadline") after at least one epoch,
    best last reported score first."""
    stopped = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
               if curve(t) and _reason(t).startswith(records.DEADLINE)]
    return _ranked(study, stopped)


def _reason(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get(records.PRUNED_REASON, ""))


def _ranked(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """`trials` best first (earlier first on ties): a completed trial by its value, a stopped
    one by its last reported score."""
    sign = 1.0 if Objectives.of(study).maximize else -1.0

    def score(trial: FrozenTrial) -> float:
        if trial.state == TrialState.PRUNED:
            values = curve(trial)
            return sign * values[max(values)]
        return sign * score_of(trial)

    return sorted(trials, key=lambda t: (-score(t), t.number))


def unbeaten(study: optuna.Study) -> list[FrozenTrial]:
    """What an ensemble is made of: the completed trials within the study's limits and the
    trials a --timeout stopped (stopped, not beaten), best first, a stopped trial by its last
    validation score.

    A trial the deadline stopped before the pruner's first check (fewer epochs than the
    earliest epoch at which the pruner stopped any trial of the study) was never compared with
    the others: it is left out while a completed trial or a stopped one that passed that check
    is there. At load 4 on 2 cores, two trials started just before the deadline (1 and 5
    epochs, validation 0.431 and 0.106) had joined the exported ensemble, and a weak completed
    trial (0.71) had been exported alone while stopped ones scored 0.73-0.77
    (docs/benchmarks.md, "A deadline under load")."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if feasible(t)]
    stopped = [t for t in deadline_stopped(study) if feasible(t)]
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    checks = [len(curve(t)) for t in pruned if curve(t) and _reason(t).startswith(records.PRUNER)]
    judged = [t for t in stopped if checks and len(curve(t)) >= min(checks)]
    return _ranked(study, complete + (judged if judged or complete else stopped))


def chosen_trials(study: optuna.Study, ensemble: int | None,
                  pick: Pick | None) -> tuple[list[FrozenTrial], str]:
    """The trials to export and how they were chosen: `pick` (default knee on a
    multi-objective study), else the top `ensemble` by validation value, the trials a
    deadline stopped among them by their last reported score (unbeaten)."""
    if ensemble is not None and ensemble < 1:
        raise GsearchError(f"--ensemble must be at least 1, got {ensemble}")
    by = Objectives.of(study).metric
    multi = len(study.directions) > 1
    if pick is None and deadline_stopped(study) and not (
            multi and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        return _with_stopped(study, ensemble, by)   # (a multi-objective study: a rule, if it can)
    if multi and ensemble is not None and ensemble > 1:
        raise GsearchError(f"study '{study.study_name}' has several objectives and exports one "
                           "model; drop --ensemble, and choose with --pick or --trial")
    if multi and pick is None:
        pick = Pick("knee")
    if pick is not None:
        if ensemble is not None and ensemble > 1:
            raise GsearchError(f"--ensemble {ensemble} cannot be combined with --pick or --trial, "
                               "which export one trial; drop one of them")
        return [pick_trial(study, pick)], pick.describe()
    chosen = top_trials(study, ensemble)
    return chosen, _rule(chosen, by)


def _rule(chosen: list[FrozenTrial], by: str) -> str:
    return by if len(chosen) == 1 else f"top-{len(chosen)} by {by}"


def _with_stopped(study: optuna.Study, ensemble: int | None, by: str) -> tuple[list[FrozenTrial], str]:
    """The top `ensemble` (None: DEFAULT_ENSEMBLE) of a study a --timeout stopped trials of
    (unbeaten), and how they were chosen: "deadline: ..." when a stopped trial is among them."""
    pool = unbeaten(study)
    if not pool:
        raise GsearchError(f"study '{study.study_name}' has no completed trial within its limits "
                           f"({Objectives.of(study).options()}); run more trials, or "
                           "export one with --trial N")
    if ensemble is not None and ensemble > len(pool):
        raise GsearchError(f"--ensemble {ensemble} needs {ensemble} trials, study '{study.study_name}' "
                           f"has {len(pool)} completed or stopped by --timeout; run more trials or "
                           f"use --ensemble {len(pool)}")
    chosen = pool[:min(ensemble or DEFAULT_ENSEMBLE, len(pool))]
    stopped = sum(t.state == TrialState.PRUNED for t in chosen)
    if not stopped:
        return chosen, _rule(chosen, by)
    if stopped == len(pool):
        return chosen, (f"{records.DEADLINE}: top-{len(chosen)} of the trials --timeout stopped, by "
                        f"their last {by} (no trial completed)")
    return chosen, (f"{records.DEADLINE}: top-{len(chosen)} by {by}, {stopped} of them stopped by "
                    f"--timeout (by their last {by})")
