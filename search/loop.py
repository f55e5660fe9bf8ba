"""The one trial loop: ask K trials, train them as one population, report every epoch, prune
each on its own, tell. `population=1` is the sequential case of the same loop. Its entrance is
`parallel.run_search` (the CLI's run, evaluate and the tests), which runs it in this process
or in worker processes.

A trial trains on the study protocol's data (protocol.Protocol.trial_data, made from the
protocol the study recorded): the validation split, or K folds under --cv K. Its folds are members of populations that train in lockstep,
one epoch per round, so every trial reports the same quantity after each epoch whatever the
population size: the mean validation score over its folds (the
study's metric: accuracy unless --metric chose another). Its value is that mean after its
last epoch. A trial whose loss diverges is pruned with the reason; the study goes on.

Pruners read the study through a local copy (`_LocalTrials`): our own trials are kept up to
date in memory and other workers' trials are re-read every _REFRESH_SECONDS (30 s), so K trials in flight
cost no K^2 storage reads per epoch. The storage gets the epochs' values in one write a
second (`_FLUSH_SECONDS`) for all trials in flight, and a trial's last ones before it is told:
Trial.report would cost a transaction per epoch, a quarter of the run for small models.

A multi-objective study (objectives.Objectives: accuracy against parameters or latency) is
pruned exactly as a single-objective one: its trials keep their accuracy curves in a system
attribute (Optuna refuses Trial.report there), and the pruner's local copy shows it as a
single-objective study of its score (objectives.score_trial). Every attribute
a trial gets is named in records.py. A finished
trial is told its objective values, and its limits as Optuna constraints.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

import numpy as np
import optuna
import torch

from gsearch.search._compat import study_id, study_storage, trial_id, write_intermediate_values
from gsearch.models.config import TrialConfig
from gsearch.models.population import EpochResult, History, Member, Populations, TrainData
from gsearch.search import objectives as obj
from gsearch.search import records
from gsearch.search.space import suggest_config
from gsearch.search.storage import with_retry
from gsearch.search.study import DEFAULT_POPULATION

TrialState = optuna.trial.TrialState
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
Space = Callable[[optuna.Trial], TrialConfig]   # a search space: trial -> TrialConfig

_REFRESH_SECONDS = 30.0   # how stale other workers' trials may be when a pruner reads them
_FLUSH_SECONDS = 1.0      # how stale the storage's (and the dashboard's) curves may be


class _LocalTrials:
    """A storage front for the pruner: trials are read from a local copy, writes go through.

    trial.should_prune() re-reads every trial from the storage on each call (about 20 ms with
    16 trials running on SQLite), so K calls an epoch cost O(K^2). Here our own trials are
    kept up to date locally (the curves we report, the system attributes a pruner writes),
    and the storage is re-read every _REFRESH_SECONDS for what other workers did. Pruning
    decisions are should_prune's, up to that staleness. A multi-objective study is shown as
    the single-objective study of its score (objectives.score_trial).
    """

    def __init__(self, study: optuna.Study):
        self._storage = study_storage(study)
        self._study_id = study_id(study)
        direction = optuna.study.StudyDirection[obj.Objectives.of(study).direction("accuracy").upper()]
        self._directions = [direction]   # the study's validation score
        self.mine: dict[int, optuna.trial.FrozenTrial] = {}    # our running trials by number
        self._others: dict[int, optuna.trial.FrozenTrial] = {}
        self._read_at = -math.inf

    def refresh(self, study: optuna.Study) -> None:
        if time.monotonic() - self._read_at > _REFRESH_SECONDS:
            self._others = {t.number: obj.score_trial(t) for t in study.get_trials(deepcopy=False)
                            if t.number not in self.mine}
            self._read_at = time.monotonic()

    def finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self.mine.pop(trial.number, None)
        self._others[trial.number] = obj.score_trial(trial)

    # -- the storage methods pruners call -----------------------------------------------------

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        trials = sorted({**self._others, **self.mine}.items())
        trials = [t for _, t in trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def set_trial_system_attr(self, trial_id_: int, key: str, value) -> None:
        for trial in self.mine.values():
            if trial_id(trial) == trial_id_:
                trial.system_attrs[key] = value
        self._storage.set_trial_system_attr(trial_id_, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._study_id

    def get_study_directions(self, study_id: int) -> list:
        return self._directions

    def __getattr__(self, name):
        return getattr(self._storage, name)


@dataclass(eq=False)
class _InFlight:
    """A trial being trained: its folds are members of populations, trained in lockstep."""

    trial: optuna.Trial
    config: TrialConfig
    members: list[Member]                     # one per fold
    histories: list[History | None]
    accuracy: list[float]                     # last validation accuracy per fold
    done: list[bool]
    frozen: optuna.trial.FrozenTrial          # the trial as the pruner sees it
    epoch: int = -1
    reported: bool = False
    diverged: str = ""
    unwritten: dict[int, float] = field(default_factory=dict)   # epoch -> value, not yet stored


class TrialLoop:
    """Ask/tell over populations: up to `size` trials in flight, each trial's configuration
    from `space`, its folds members of the one training driver (models.population.Populations),
    which trains every member one epoch per round.

    `run(trials, timeout)` runs `trials` more trials. After `timeout` seconds no trial starts,
    and the trials still training stop after their current epoch: pruned, with the reason
    "deadline" and their curves kept. `callbacks` run after each finished trial, as in
    study.optimize. A trial is asked for only while `claim()` (if given) grants one: the
    budget shared by a run's worker processes; `lock` (theirs too) serializes their failing
    of stale trials, so that no two of them fail and retry the same trial. When `stop()`
    turns true (a signal handler's request) the loop raises KeyboardInterrupt at its next
    safe point, before an ask or after an epoch, and the trials in flight end as FAIL,
    marked interrupted.

    A retry that this loop's heartbeat enqueued (a dead worker's trial) is run before the
    loop ends, within `trials` when a claim is left, else on top (`claim(force=True)`), so
    that no retry is left WAITING.

    A trial in flight that another process ended (its heartbeat took this one for dead: it
    stalled, stopped or lost the storage for longer than the grace period, and the trial was
    failed and enqueued again there) is dropped, with one line on stderr: it leaves its
    population, `release(trial)` (if given) gives its claim back, and the loop goes on with
    new trials, so that `trials` still counts finished ones."""

    def __init__(self, study: optuna.Study, data: list[TrainData], *, space: Space = suggest_config,
                 device: torch.device, seed: int = 0, size: int = DEFAULT_POPULATION,
                 callbacks: Sequence[Callback] = (), claim: Callable[..., bool] | None = None,
                 lock: ContextManager | None = None, stop: Callable[[], bool] | None = None,
                 release: Callable[[optuna.trial.FrozenTrial], None] | None = None):
        self.study, self.data, self.space, self.device, self.seed = study, data, space, device, seed
        self.release = release
        self.size, self.callbacks, self.claim = max(1, size), callbacks, claim
        self.stop = stop or (lambda: False)
        self.lock = lock or contextlib.nullcontext()
        self.objectives = obj.Objectives.of(study)
        self.driver = Populations(device=device, seed=seed * 7919)
        self.owner: dict[Member, tuple[_InFlight, int]] = {}
        self.running: list[_InFlight] = []
        self.local = _LocalTrials(study)
        # The same study, read through the local copy: what the pruner is shown.
        self.view = optuna.Study(study.study_name, self.local, sampler=study.sampler,
                                 pruner=study.pruner)
        self._beat_at = self._written_at = -math.inf
        self.owed = 0   # retries our heartbeat enqueued that nobody has run yet
        self.dropped = 0   # trials in flight that another process ended (_ended_elsewhere)

    def run(self, trials: int, timeout: float | None = None) -> None:
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        asked = 0
        try:
            while True:
                self._checkpoint()
                self._beat()
                while len(self.running) < self.size and time.monotonic() < deadline:
                    self._checkpoint()
                    if asked - self.dropped < trials and (self.claim is None or self.claim()):
                        pass   # a new trial, or a waiting retry, within the budget
                    elif self._retry_waiting() and (self.claim is None or self.claim(force=True)):
                        self.owed -= 1
                    else:
                        break
                    self._start(self._ask())
                    asked += 1
                    self._beat_at = -math.inf  # the new trial beats at once
                if not self.running:
                    return
                self._beat()
                for member, result in self.driver.run_epoch(deadline):   # given up past it
                    self._record(member, result)
                self._report_prune_finish()
                if time.monotonic() >= deadline:
                    for run in list(self.running):
                        reason = (f"{records.DEADLINE}: --timeout {timeout:g} s reached after "
                                  f"epoch {run.epoch + 1}")
                        self._end(run, TrialState.PRUNED, reason=reason)
        except BaseException as error:
            interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
            with contextlib.suppress(Exception):
                self._write(self.running)   # their curves so far
            for run in self.running:   # leave no trial RUNNING behind
                if interrupted:    # not a failure of the configuration: say so
                    with contextlib.suppress(Exception):   # (a full disk may refuse it)
                        run.trial.set_user_attr(records.INTERRUPTED, True)
                with contextlib.suppress(Exception):
                    self.study.tell(run.trial, state=TrialState.FAIL)
            raise

    def _checkpoint(self) -> None:
        if self.stop():
            raise KeyboardInterrupt

    def _beat(self) -> None:
        """Heartbeats, as study.optimize gives them, for ask/tell: every trial in flight beats
        at half the storage's interval, and stale trials of dead workers are failed (and
        retried by the storage's callback) before new trials are asked for."""
        storage = study_storage(self.study)
        interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
        if not interval or time.monotonic() - self._beat_at < interval / 2:
            return
        self._beat_at = time.monotonic()
        for run in self.running:
            storage.record_heartbeat(trial_id(run.trial))
        retry = storage.get_heartbeat_stale_trial_callback()
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        if getattr(retry, "enqueued", None):   # storage.resilience.RetryStale counts what it enqueues
            self.owed += len(retry.enqueued)
            retry.enqueued.clear()

    def _retry_waiting(self) -> bool:
        """Whether a retry we enqueued still waits (another worker may have run it)."""
        if self.owed and not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.owed = 0
        return self.owed > 0

    def _ask(self) -> optuna.Trial:
        with warnings.catch_warnings():  # heartbeats are handled by _beat
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return self.study.ask()

    def _start(self, trial: optuna.Trial) -> None:
        try:
            config = self.space(trial)
            seed = self.seed + trial.number
            trial.set_user_attr(records.TRIAL_SEED, seed)
            trial.set_user_attr(records.DEVICE, str(self.device))
            trial.set_user_attr(records.CONFIG, config.describe())  # with the fields the space does not search
            study_storage(self.study).set_trial_system_attr(   # what export rebuilds, whole
                trial_id(trial), records.TRIAL_CONFIG, config.to_dict())
        except optuna.exceptions.UpdateFinishedTrialError:
            if not self._ended_elsewhere([trial]):
                raise
            return
        n = len(self.data)
        frozen = optuna.trial.FrozenTrial(
            number=trial.number, state=TrialState.RUNNING, value=None, datetime_start=None,
            datetime_complete=None, params=trial.params, distributions=trial.distributions,
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=trial_id(trial))
        run = _InFlight(trial, config, [], [None] * n, [math.nan] * n, [False] * n, frozen)
        for fold, data in enumerate(self.data):
            member = self.driver.add(config, data, seed)
            run.members.append(member)
            self.owner[member] = (run, fold)
        self.local.mine[trial.number] = frozen
        self.running.append(run)

    def _record(self, member: Member, result: EpochResult) -> None:
        run, fold = self.owner[member]
        run.epoch, run.reported = result.epoch, True
        run.histories[fold] = result.history
        if result.history.diverged:
            run.diverged = result.history.diverged
        else:
            run.accuracy[fold] = result.val_score
        run.done[fold] = result.done

    def _report_prune_finish(self) -> None:
        """Report this round's epochs of all trials in flight, then prune or finish each."""
        self.local.refresh(self.study)
        for run in self.running:
            if run.reported and not run.diverged:
                value = float(np.mean(run.accuracy))
                run.frozen.intermediate_values[run.epoch] = value
                run.unwritten[run.epoch] = value   # Trial.report's record, stored by _write
        if time.monotonic() - self._written_at >= _FLUSH_SECONDS:
            self._write(self.running)
        for run in list(self.running):
            if run.diverged:
                self._end(run, TrialState.PRUNED, reason=run.diverged)
                continue
            if not run.reported:
                continue
            run.reported = False
            try:   # a pruner may write a system attribute of the trial
                prune = self.study.pruner.prune(self.view, run.frozen)
            except optuna.exceptions.UpdateFinishedTrialError:
                if not self._ended_elsewhere([run]):
                    raise
                continue
            if prune:
                value = run.frozen.intermediate_values[run.epoch]
                reason = (f"{records.PRUNER} stopped it after epoch {run.epoch + 1} "
                          f"({self.objectives.score_title} {value:.3f})")
                self._end(run, TrialState.PRUNED, reason=reason)
            elif all(run.done):
                self._end(run, TrialState.COMPLETE)

    def _write(self, runs: Sequence[_InFlight]) -> None:
        """Store the values reported since the last write: as intermediate values, all trials
        in one transaction; in a multi-objective study (which refuses them) each trial's whole
        curve so far, as a trial system attribute."""
        runs = [run for run in runs if run.unwritten]
        storage = study_storage(self.study)
        try:
            if self.objectives.multi:
                for run in runs:
                    curve = [run.frozen.intermediate_values[e] for e in sorted(run.frozen.intermediate_values)]
                    storage.set_trial_system_attr(trial_id(run.trial), records.CURVE, curve)
            elif runs:
                with_retry(storage, write_intermediate_values, storage,   # through an outage
                           {trial_id(run.trial): run.unwritten for run in runs})
        except optuna.exceptions.UpdateFinishedTrialError:
            if not self._ended_elsewhere(runs):
                raise
            self._write([run for run in runs if run in self.running])   # the others' values
            return
        for run in runs:
            run.unwritten = {}
        self._written_at = time.monotonic()

    def _measure(self, run: _InFlight) -> dict[str, float]:
        """The objectives and limited quantities of a trained (or pruned) trial, measured on
        its first fold's model before it leaves its population."""
        if run.diverged or self.objectives.needed() == ["accuracy"]:
            return {}
        member, data = run.members[0], self.data[0]
        history = run.histories[0]
        n_params = history.n_params if history is not None else 0
        measured = obj.Measured(accuracy=float(np.mean(run.accuracy)), n_params=n_params,
                                module=lambda: self.driver.to_module(member), row=data.X_train[:1])
        return self.objectives.measure(measured)

    def _ended_elsewhere(self, runs: Sequence[_InFlight | optuna.Trial]) -> bool:
        """After a write refused as one to a finished trial: drop those of `runs` (trials in
        flight, or one being started) that another process ended (see the class), saying so
        in one line; whether there were any."""
        storage = study_storage(self.study)
        ended = [(run, storage.get_trial(trial_id(getattr(run, "trial", run)))) for run in runs]
        ended = [(run, frozen) for run, frozen in ended if frozen.state.is_finished()]
        for run, frozen in ended:
            for member in getattr(run, "members", ()):
                if member in self.owner:   # still training (not when _end has taken it out)
                    self.driver.remove(member)
                    del self.owner[member]
            if run in self.running:
                self.running.remove(run)
            self.local.finished(frozen)
            self.dropped += 1
            if self.release is not None:
                self.release(frozen)
        if ended:
            numbers = ", ".join(f"#{frozen.number}" for _, frozen in ended)
            print(f"gsearch: trial{'s' if len(ended) > 1 else ''} {numbers} "
                  f"{'were' if len(ended) > 1 else 'was'} ended ({ended[0][1].state.name}) by "
                  "another process whose heartbeat took this one for dead (it was stopped, "
                  "stalled or cut off from the storage for longer than 3 beats); dropped here, "
                  "going on with new trials",
                  file=sys.stderr, flush=True)
        return bool(ended)

    def _end(self, run: _InFlight, state: TrialState, reason: str = "") -> None:
        self._write([run])   # a pruned trial's value is its last stored one
        if run not in self.running:   # ended by another process meanwhile: dropped
            return
        measured = self._measure(run)
        for fold, member in enumerate(run.members):
            run.histories[fold] = self.driver.remove(member)   # done or pruned
            del self.owner[member]
        self.running.remove(run)
        try:
            frozen = self._tell(run, state, reason, measured)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            # ValueError: Optuna's tell of a trial it reads as finished ("Cannot tell a FAIL trial")
            frozen = study_storage(self.study).get_trial(trial_id(run.trial))
            if frozen.state != state:   # else: our tell, retried after its commit landed
                if not self._ended_elsewhere([run]):
                    raise
                return
        self.local.finished(frozen)
        for callback in self.callbacks:
            callback(self.study, frozen)

    def _tell(self, run: _InFlight, state: TrialState, reason: str,
              measured: dict[str, float]) -> optuna.trial.FrozenTrial:
        """A trial's records (user attributes, constraints) and its end, told to the study."""
        trial = run.trial
        if reason:
            trial.set_user_attr(records.PRUNED_REASON, reason)
        histories = [h for h in run.histories if h is not None]
        if not run.diverged:
            trial.set_user_attr(records.N_PARAMS, histories[0].n_params)
            trial.set_user_attr(records.TRAIN_SECONDS, round(sum(h.seconds for h in histories), 3))
            trial.set_user_attr(records.EPOCHS_RUN, histories[0].epochs_run)
            trial.set_user_attr(records.TRAIN_LOSS, [round(v, 5) for v in histories[0].train_loss])
        for name, value in measured.items():   # a measured cost under its objective's attribute
            if obj.OBJECTIVES[name].attr not in (None, records.N_PARAMS):   # n_params: above
                trial.set_user_attr(obj.OBJECTIVES[name].attr, value)
        for name, over in self.objectives.constraints(measured).items():
            trial.set_constraint(name, over)   # feasible when <= 0
        values = None
        if state == TrialState.COMPLETE:
            measured["accuracy"] = float(np.mean(run.accuracy))
            values = [measured[name] for name in self.objectives.names]
            if len(run.accuracy) > 1:
                trial.set_user_attr(records.FOLD_ACCURACIES, [round(a, 5) for a in run.accuracy])
        return self.study.tell(trial, values, state=state)
