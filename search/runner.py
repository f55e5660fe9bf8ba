"""Run trials of a study with a progress bar and print a summary at the end.

Two paths: study.optimize over the sequential Objective (`population=1`), or ask/tell
with several trials trained at once as one batched model (models.population).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import optuna
import torch
from tqdm.auto import tqdm

from gsearch.data.load import Dataset
from gsearch.data.split import Split
from gsearch.models.config import TrialConfig
from gsearch.models.population import EpochResult, Population, population_key
from gsearch.models.train import History, TrainData
from gsearch.search.objective import Objective, record_history
from gsearch.search.space import suggest_config
from gsearch.search.study import DEFAULT_POPULATION, state_counts

TrialState = optuna.trial.TrialState


class _Progress:
    """Optuna callback: trials done / total, best validation accuracy, pruned count."""

    def __init__(self, study: optuna.Study, total: int):
        counts = state_counts(study)
        self.best = study.best_value if counts["complete"] else None
        self.pruned = 0
        self.bar = tqdm(total=total, unit="trial", desc="search", dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE and (self.best is None or trial.value > self.best):
            self.best = trial.value
        self.pruned += trial.state == TrialState.PRUNED
        best = "-" if self.best is None else f"{self.best:.3f}"
        self.bar.set_postfix_str(f"best={best} pruned={self.pruned}", refresh=False)
        self.bar.update(1)


def summary(study: optuna.Study) -> str:
    counts = state_counts(study)
    lines = [f"study '{study.study_name}': {len(study.trials)} trials, {counts['complete']} complete, "
             f"{counts['pruned']} pruned, {counts['fail']} failed"]
    if counts["complete"]:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best.params.items())
        lines.append(f"best trial #{best.number}: validation accuracy {best.value:.4f}")
        lines.append(f"  {params}")
    return "\n".join(lines)


def run_study(study: optuna.Study, ds: Dataset, split: Split, *, trials: int, device: torch.device,
              seed: int = 0, timeout: float | None = None, verbose: bool = False,
              population: int = DEFAULT_POPULATION, cv: int | None = None,
              callbacks: Sequence[Callable] = (), claim: Callable[[], bool] | None = None) -> None:
    """`population` trials at a time are trained as one batched model (ask/tell); 1 runs
    the sequential objective under study.optimize. `cv=None` follows the study's protocol
    (objective.study_protocol). `callbacks` run after each finished trial, as in
    study.optimize (workers.py counts the run's trials with one and may call study.stop()
    on the sequential path); the population path asks for a trial only while `claim()`
    (if given) grants one."""
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    progress = _Progress(study, trials)
    objective = Objective(ds, split, device, seed, cv)
    try:
        if population <= 1:
            study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[progress, *callbacks])
        else:
            _PopulationSearch(study, objective.evaluation_sets(study), device, seed,
                              population, [progress, *callbacks], claim).run(trials, timeout)
    finally:
        progress.bar.close()
        print(summary(study))


_REFRESH_SECONDS = 30.0


class _LocalReads:
    """A storage front for the pruner: trials are read from a local copy, writes go through.

    trial.should_prune() re-reads every running trial from the storage on each call
    (about 20 ms with 16 trials running on SQLite), so K calls an epoch cost O(K^2). Here
    our own trials are kept up to date locally (the curves we report, the system
    attributes a pruner writes), and the storage is re-read every _REFRESH_SECONDS for
    what other workers did. Pruning decisions are should_prune's, up to that staleness.
    """

    def __init__(self, study: optuna.Study):
        self._storage = study._storage
        self._study_id = study._study_id
        self._directions = study.directions
        self.mine: dict[int, optuna.trial.FrozenTrial] = {}    # our running trials by number
        self._others: dict[int, optuna.trial.FrozenTrial] = {}
        self._read_at = -math.inf

    def refresh(self, study: optuna.Study) -> None:
        if time.monotonic() - self._read_at > _REFRESH_SECONDS:
            self._others = {t.number: t for t in study.get_trials(deepcopy=False)
                            if t.number not in self.mine}
            self._read_at = time.monotonic()

    def finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self.mine.pop(trial.number, None)
        self._others[trial.number] = trial

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        trials = sorted({**self._others, **self.mine}.items())
        trials = [t for _, t in trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        for trial in self.mine.values():
            if trial._trial_id == trial_id:
                trial.system_attrs[key] = value
        self._storage.set_trial_system_attr(trial_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._study_id

    def get_study_directions(self, study_id: int) -> list:
        return self._directions

    def __getattr__(self, name):
        return getattr(self._storage, name)


@dataclass(eq=False)
class _Run:
    """A trial in flight: its folds are members of populations, trained in lockstep."""

    trial: optuna.Trial
    config: TrialConfig
    members: list[tuple[tuple, int]]          # (population key, member id) per fold
    histories: list[History | None]
    accuracy: list[float]                     # last validation accuracy per fold
    done: list[bool]
    epoch: int = -1
    reported: bool = False
    diverged: str = ""
    frozen: optuna.trial.FrozenTrial | None = None   # as the pruner sees it

    @property
    def finished(self) -> bool:
        return all(self.done)


class _PopulationSearch:
    """Ask/tell search: up to `size` trials in flight, their folds grouped into
    populations that each train one epoch per round. Every trial is reported, pruned
    and told on its own, with the same user attributes as the sequential objective."""

    def __init__(self, study: optuna.Study, sets: list[TrainData], device: torch.device, seed: int,
                 size: int, callbacks: Sequence[Callable], claim: Callable[[], bool] | None = None):
        self.study, self.sets, self.device, self.seed = study, sets, device, seed
        self.size, self.callbacks, self.claim = size, callbacks, claim
        self.pops: dict[tuple, Population] = {}
        self.owner: dict[tuple[tuple, int], tuple[_Run, int]] = {}
        self.running: list[_Run] = []
        self.local = _LocalReads(study)
        # The same study, read through the local copy: what the pruner is shown.
        self.view = optuna.Study(study.study_name, self.local, sampler=study.sampler, pruner=study.pruner)

    def _beat(self) -> None:
        """Heartbeats, as study.optimize gives them, for ask/tell: every trial in flight beats
        at half the storage's interval, and stale trials of dead workers are failed (and
        retried by the storage's callback) before new trials are asked for."""
        storage = self.study._storage
        interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
        if not interval or time.monotonic() - self._beat_at < interval / 2:
            return
        self._beat_at = time.monotonic()
        for run in self.running:
            storage.record_heartbeat(run.trial._trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def _ask(self) -> optuna.Trial:
        with warnings.catch_warnings():  # heartbeats are handled by _beat
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return self.study.ask()

    def run(self, trials: int, timeout: float | None) -> None:
        start, asked = time.monotonic(), 0
        self._beat_at = -math.inf
        try:
            while True:
                self._beat()
                while (len(self.running) < self.size and asked < trials
                       and (timeout is None or time.monotonic() - start < timeout)
                       and (self.claim is None or self.claim())):
                    self._start(self._ask())
                    asked += 1
                    self._beat_at = -math.inf  # the new trial beats at once
                if not self.running:
                    return
                self._beat()
                for key, pop in self.pops.items():
                    for result in pop.run_epoch():
                        self._record(key, result)
                self._report_prune_finish()
        except BaseException:
            for run in self.running:   # leave no trial RUNNING behind
                with contextlib.suppress(Exception):
                    self.study.tell(run.trial, state=TrialState.FAIL)
            raise

    def _start(self, trial: optuna.Trial) -> None:
        config = suggest_config(trial)
        seed = self.seed + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr("config", config.describe())
        n = len(self.sets)
        run = _Run(trial, config, [], [None] * n, [math.nan] * n, [False] * n)
        for fold, data in enumerate(self.sets):
            key = population_key(config, data, self.device)
            if key not in self.pops:
                self.pops[key] = Population(device=self.device, seed=self.seed * 7919 + len(self.pops))
            member = self.pops[key].add(config, data, seed)
            run.members.append((key, member))
            self.owner[key, member] = (run, fold)
        run.frozen = optuna.trial.FrozenTrial(
            number=trial.number, state=TrialState.RUNNING, value=None, datetime_start=None,
            datetime_complete=None, params=trial.params, distributions=trial.distributions,
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=trial._trial_id)
        self.local.mine[trial.number] = run.frozen
        self.running.append(run)

    def _record(self, key: tuple, result: EpochResult) -> None:
        run, fold = self.owner[key, result.member]
        run.epoch, run.reported = result.epoch, True
        run.histories[fold] = result.history
        if result.history.diverged:
            run.diverged = result.history.diverged
        else:
            run.accuracy[fold] = result.val_accuracy
        run.done[fold] = result.done

    def _report_prune_finish(self) -> None:
        self.local.refresh(self.study)
        for run in list(self.running):
            if run.diverged:
                self._end(run, TrialState.PRUNED, reason=run.diverged)
                continue
            if not run.reported:
                continue
            run.reported = False
            value = float(np.mean(run.accuracy))
            run.trial.report(value, run.epoch)
            run.frozen.intermediate_values[run.epoch] = value
            if self.study.pruner.prune(self.view, run.frozen):
                reason = f"pruner stopped it after epoch {run.epoch + 1} (validation accuracy {value:.3f})"
                self._end(run, TrialState.PRUNED, reason=reason)
            elif run.finished:
                self._end(run, TrialState.COMPLETE)

    def _end(self, run: _Run, state: TrialState, reason: str = "") -> None:
        for fold, (key, member) in enumerate(run.members):
            if not run.done[fold]:
                run.histories[fold] = self.pops[key].remove(member)
                run.histories[fold].stopped_early = True
            del self.owner[key, member]
        self.running.remove(run)
        if reason:
            run.trial.set_user_attr("pruned_reason", reason)
        if not run.diverged:
            record_history(run.trial, [h for h in run.histories if h is not None])
        if len(run.accuracy) > 1 and state == TrialState.COMPLETE:
            run.trial.set_user_attr("fold_accuracies", [round(a, 5) for a in run.accuracy])
        value = float(np.mean(run.accuracy)) if state == TrialState.COMPLETE else None
        frozen = self.study.tell(run.trial, value, state=state)
        self.local.finished(frozen)
        for callback in self.callbacks:
            callback(self.study, frozen)
