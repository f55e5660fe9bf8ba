"""What the user sees while a study runs: a progress bar, and a summary at the end."""

from __future__ import annotations

import os
import sys

import optuna
from tqdm.auto import tqdm

from gsearch.search.objectives import OBJECTIVES, Objectives, accuracy_of, feasible
from gsearch.search.selection import pareto_front
from gsearch.search.study import state_counts

TrialState = optuna.trial.TrialState


class Progress:
    """Optuna callback: trials done / total, best validation accuracy, pruned count."""

    def __init__(self, study: optuna.Study, total: int):
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.best = max((accuracy_of(t) for t in complete), default=None)
        self.pruned = 0
        self.bar = tqdm(total=total, unit="trial", desc="search", **_width(sys.stderr))

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE and (self.best is None or accuracy_of(trial) > self.best):
            self.best = accuracy_of(trial)
        self.pruned += trial.state == TrialState.PRUNED
        best = "-" if self.best is None else f"{self.best:.3f}"
        self.bar.set_postfix_str(f"best={best} pruned={self.pruned}", refresh=False)
        self.bar.update(1)

    def write(self, message: str, **kwargs) -> None:
        self.bar.write(message, **kwargs)

    def close(self) -> None:
        self.bar.close()


def _width(stream) -> dict:
    """tqdm's width: the terminal's as it changes, or a fixed 80 columns where a terminal
    reports none (some IDE consoles and CI logs say 0 columns, and tqdm then prints nothing)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return {}   # not a terminal: tqdm writes whole lines
    return {"dynamic_ncols": True} if columns > 1 else {"ncols": 80}


def summary(study: optuna.Study) -> str:
    counts = state_counts(study)
    lines = [f"study '{study.study_name}': {len(study.trials)} trials, {counts['complete']} complete, "
             f"{counts['pruned']} pruned, {counts['fail'] - counts['interrupted']} failed"
             + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")]
    objectives = Objectives.of(study)
    if counts["complete"] and objectives.multi:
        front = pareto_front([t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                              if feasible(t)])
        cost = OBJECTIVES[objectives.cost]
        lines.append(f"Pareto front ({objectives.describe()}): {len(front)} trials")
        lines += [f"  trial #{t.number}: validation accuracy {t.values[0]:.4f}, {cost.metric} "
                  f"{cost.show(t.values[1])}" for t in front]
    elif counts["complete"]:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best.params.items())
        lines.append(f"best trial #{best.number}: validation accuracy {best.value:.4f}")
        lines.append(f"  {params}")
    return "\n".join(lines)
