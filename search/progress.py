"""What the user sees while a study runs: a progress bar, and a summary at the end.

How (requests.PROGRESS): "auto", a tqdm bar on a terminal and plain lines elsewhere (the CLI);
"bar", tqdm.auto's bar wherever it is (a notebook's widget; the Python API's verbose
estimators); "off", nothing, not even the summary (the Python API's quiet estimators)."""

from __future__ import annotations

import os
import sys
import time

import optuna
from tqdm.auto import tqdm

from gsearch.search.objectives import OBJECTIVES, Objectives, feasible, score_of
from gsearch.search.selection import pareto_front
from gsearch.search.study import state_counts

TrialState = optuna.trial.TrialState


PROGRESS_SECONDS = 10.0
"""Where stderr is not a terminal (a pipe, a CI log): seconds between plain progress lines;
the environment variable GSEARCH_PROGRESS_SECONDS overrides it."""


class Progress:
    """Optuna callback: trials done / total, best validation score, pruned count. On a
    terminal a tqdm bar; elsewhere (a pipe, a file, a CI log) a plain line on stderr when a
    trial finishes at least `PROGRESS_SECONDS` after the previous line, not tqdm's
    carriage-return bar."""

    def __init__(self, study: optuna.Study, total: int | None, how: str = "auto"):
        """`total`: the trials the run asks for (None: as many as its deadline allows)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.gain = Objectives.of(study).gain
        self.best = max(complete, key=self.gain, default=None)   # the best completed trial
        self.pruned = 0
        self.done = 0
        self.total = total
        shape = _shape(sys.stderr) if how == "auto" else {} if how == "bar" else None
        self.bar = None if shape is None else tqdm(total=total, unit="trial", desc="search", **shape)
        self.every = _seconds()
        self.quiet = _tqdm_disabled() or how == "off"
        self.last = time.monotonic()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE and (self.best is None
                                                   or self.gain(trial) > self.gain(self.best)):
            self.best = trial
        self.pruned += trial.state == TrialState.PRUNED
        self.done += 1
        best = "-" if self.best is None else f"{score_of(self.best):.3f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"best={best} pruned={self.pruned}", refresh=False)
            self.bar.update(1)
        elif not self.quiet and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(f"search: {self.done}/{self.total or '-'} trials, best {best}, pruned {self.pruned}",
                  file=sys.stderr, flush=True)

    def write(self, message: str, **kwargs) -> None:
        tqdm.write(message, **kwargs)   # above the bar, if there is one

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _shape(stream) -> dict | None:
    """tqdm's size on a terminal: the terminal's as it changes, or a fixed one where the
    terminal reports none (`script`, some IDE and CI consoles say 0x0: tqdm then draws nothing,
    as a bar below a 0-row screen's last row); None where `stream` is not a terminal."""
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    # tqdm takes columns - 1 and lines - 1, and hides a bar on or below that last row: from 3 lines
    if columns > 1 and lines > 2:
        return {"dynamic_ncols": True}
    return {"ncols": columns - 1 if columns > 1 else 80, "nrows": lines - 1 if lines > 2 else 24}


def _seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("GSEARCH_PROGRESS_SECONDS", PROGRESS_SECONDS)))
    except ValueError:
        return PROGRESS_SECONDS


def _tqdm_disabled() -> bool:
    """TQDM_DISABLE (tqdm's own setting), which silences the bar, silences the lines too."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def summary(study: optuna.Study) -> str:
    counts = state_counts(study)
    lines = [f"study '{study.study_name}': {len(study.trials)} trials, {counts['complete']} complete, "
             f"{counts['pruned']} pruned, {counts['fail'] - counts['interrupted']} failed"
             + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")]
    objectives = Objectives.of(study)
    if counts["complete"] and objectives.multi:
        front = pareto_front([t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                              if feasible(t)], objectives)
        cost = OBJECTIVES[objectives.cost]
        lines.append(f"Pareto front ({objectives.describe()}): {len(front)} trials")
        lines += [f"  trial #{t.number}: {objectives.score_title} {t.values[0]:.4f}, {cost.metric} "
                  f"{cost.show(t.values[1])}" for t in front]
    elif counts["complete"]:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best.params.items())
        lines.append(f"best trial #{best.number}: {objectives.score_title} {best.value:.4f}")
        lines.append(f"  {params}")
    return "\n".join(lines)
