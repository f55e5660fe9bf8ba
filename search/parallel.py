"""The one entrance into the trial loop, `run_search`, and parallel search the Optuna way:
worker processes that share one study in one storage.

`gsearch run`, `gsearch evaluate` and the tests all call `run_search(study, ds, ...)`: the
study's recorded protocol makes the trials' data (protocol.Protocol.trial_data), the search
space is passed in (by default the one the study was sized to: space.SearchSpace), and the
trials run in this process on the caller's study handle (its sampler and pruner), or in
`Workers.count` processes, each a worker (worker.py: its own handle of the study, its own
sampler seed, torch threads shared out so the cores are not oversubscribed); the storage is
the only meeting point, so workers on other machines join the same way. The run's budget is
shared by its local workers, so `--trials` is the run's total (Optuna's MaxTrialsCallback
counts after the fact and overshoots by up to N-1 with N workers).

Here: the parent (`_Parent`), which shows progress from what its workers report, forwards
Ctrl-C/SIGTERM to them, and recovers from a worker killed from outside (an OOM killer): a
second after the death (its last write may still be landing), it fails the dead worker's
trials, enqueues each once more (`retry_of`), gives their claims back so the retries run
within the budget, and starts a replacement, as a process supervisor does: with back-off,
and a slot that keeps dying without finishing a trial is stopped. However a run ends, no
trial of its own is left RUNNING.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import importlib.util
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from multiprocessing.connection import wait
from typing import Sequence

import optuna
import torch

from gsearch import GsearchError
from gsearch.search._compat import study_storage, trial_id
from gsearch.data.load import Dataset
from gsearch.models.population import resolve_device
from gsearch.search import records
from gsearch.search.loop import Callback, Space
from gsearch.search._spawn import spawning, start_workers_server, worker_cap
from gsearch.search.progress import Progress, summary
from gsearch.search.space import SearchSpace, space_of
from gsearch.search.storage import (StorageLost, StorageStop,
                                    give_up, retry_trial, safe_url)
from gsearch.search.study import DEFAULT_POPULATION, Strategy, StudyDeleted, finished, study_deleted
from gsearch.search.worker import (Budget, Run, StudyHandle, Workers, run_loop, signal_handlers,
                                   worker_main)

TrialState = optuna.trial.TrialState
# A slot whose worker dies CRASH_LIMIT times within CRASH_WINDOW seconds without finishing
# a trial is not restarted; the k-th death in a row waits BACKOFF[k-1] seconds first.
CRASH_LIMIT, CRASH_WINDOW = 5, 60.0
BACKOFF = (0.0, 1.0, 2.0, 4.0)
# A worker killed while it committed leaves that write to the database server, which may land
# just after the parent saw the death: its trials are read this long after, so that a trial
# it had just created is failed (not left RUNNING) and its retry gets every parameter.
SETTLE = 1.0
# A run with no trial count (only a deadline): its budget, the largest a shared int holds
UNBOUNDED = 2**31 - 1


def run_search(study: optuna.Study, ds: Dataset, *, trials: int, space: Space | None = None,
               device: torch.device | str = "cpu", seed: int = 0, timeout: float | None = None,
               population: int = DEFAULT_POPULATION, workers: Workers | None = None,
               callbacks: Sequence[Callback] = (), progress: str = "auto") -> None:
    """Run `trials` more finished trials of `study` on `ds`, with the protocol the study
    recorded, each trial's configuration from `space` (trial -> TrialConfig; by default the
    space the study was sized to, space.SearchSpace.of), trained on
    `device` with seed `seed` + trial number, `population` trials at once.

    After `timeout` seconds no trial starts and the trials in flight stop at the next batch
    once each has finished an epoch (pruned, reason "deadline"; a partial epoch is not counted). With `workers` (count > 1) the trials run in that many
    processes, each on its own handle of the study (`space` must then be picklable: a
    module-level function); otherwise here, on `study` itself. `callbacks` run in this
    process after each finished trial, as in study.optimize. Shows a progress bar, then a
    summary (`progress`: how, requests.PROGRESS; "off": neither). `trials` None: as many as
    `timeout` allows. Raises KeyboardInterrupt after a clean stop on Ctrl-C/SIGTERM: no trial of its
    own is left RUNNING.

    >>> import optuna
    >>> from gsearch.data.load import BUNDLED_DATA, load_dataset
    >>> from gsearch.models.config import TrialConfig
    >>> from gsearch.search.protocol import Protocol
    >>> ds = load_dataset(BUNDLED_DATA)              # the GTZAN table gsearch ships
    >>> study = optuna.create_study(study_name="demo", direction="maximize")
    >>> for key, value in Protocol().fingerprint(ds).items():
    ...     study.set_user_attr(key, value)          # what open_study records
    >>> def tiny(trial):
    ...     return TrialConfig(n_layers=1, width=trial.suggest_int("width", 16, 32), epochs=3)
    >>> run_search(study, ds, trials=2, space=tiny)  # doctest: +ELLIPSIS
    study 'demo': 2 trials, 2 complete, 0 pruned, 0 failed
    best trial #...
    >>> len(study.trials), study.trials[0].user_attrs["epochs_run"]
    (2, 3)
    """
    total, trials = trials, UNBOUNDED if trials is None else trials
    if workers is not None:
        workers = dataclasses.replace(workers, count=worker_cap(workers.count, trials)[0])
    sized = SearchSpace.of(study)
    run = Run(study=study.study_name, trials=trials, space=space_of(study, space),
               max_epochs=sized.max_epochs, seed=seed,
               device=str(resolve_device(device) if isinstance(device, str) else device),
               timeout=timeout, population=population, done=len(study.get_trials(deepcopy=False)),
               workers=workers or Workers(1, "", Strategy()))
    parent = _Parent(run, ds, study, callbacks, (total, progress)) if run.workers.count > 1 else None
    budget = parent.budget if parent else Budget(mp.get_context(), 1, trials)
    try:
        if parent:
            parent.run()
            return
        shown = Progress(study, total, progress)
        try:
            run_loop(StudyHandle.of(study), ds, run, slot=0, budget=budget,
                  callbacks=[shown, *callbacks])
        finally:
            shown.close()
            if progress != "off":
                with _unless_deleted(study):
                    print(summary(study))
    except GsearchError as e:
        raise _gave_up(e, budget, study, run) from None
    except Exception as e:
        if not study_deleted(study):
            raise
        raise _gave_up(e, budget, study, run) from None


@contextlib.contextmanager
def _unless_deleted(study: optuna.Study):
    """Errors of the block, unless `study` is gone from its storage (the run then says so)."""
    try:
        yield
    except StorageStop:   # the storage is gone or full: it says so itself
        raise
    except Exception:
        if not study_deleted(study):
            raise


def _gave_up(error: Exception, budget: Budget, study: optuna.Study, run: Run) -> GsearchError:
    """The one line of a run that stopped on an error: for a study deleted meanwhile, that;
    for a storage gone or full (StorageStop), with the `--trials` of the rerun that finishes
    this run's count; any other error as it is."""
    done = budget.finished.value
    if isinstance(error, StudyDeleted) or (not isinstance(error, StorageLost)
                                           and study_deleted(study)):
        where = safe_url(run.workers.storage) if run.workers.storage else "its storage"
        return StudyDeleted(f"study '{study.study_name}' was deleted from {where} while this run "
                            f"was searching it; {done} of this run's {budget.total} trials had "
                            "finished, and went with it: run again to start the study anew")
    if not isinstance(error, StorageStop) or done >= budget.total:
        return error
    return GsearchError(f"{error} ({done} of this run's {budget.total} trials finished: "
                        f"--trials {budget.total - done} finishes its count)")


class _Parent:
    """Starts the workers, shows their progress, forwards signals, recovers killed ones."""

    def __init__(self, run: Run, ds: Dataset, study: optuna.Study, callbacks: Sequence[Callback],
                 progress: tuple[int | None, str] = (None, "auto")):
        """`progress`: (the trials asked, None for a deadline alone; how, requests.PROGRESS)."""
        self.spec, self.ds, self.study, self.callbacks = run, ds, study, callbacks
        self.progress = progress
        workers = run.workers.count
        self.ctx = start_workers_server()
        self.lock_path = None
        if importlib.util.find_spec("fcntl"):   # POSIX; elsewhere a plain process lock
            fd, self.lock_path = tempfile.mkstemp(prefix="gsearch-run-", suffix=".lock")
            os.close(fd)
        self.budget = Budget(self.ctx, workers, run.trials, lock_path=self.lock_path)
        self.procs: dict[int, tuple[mp.Process, object]] = {}
        self.index: dict[int, int] = {}                 # slot -> index of its current worker
        self.asked: dict[int, set[int]] = {slot: set() for slot in range(workers)}
        self.deaths = {slot: collections.deque() for slot in range(workers)}
        self.restart_at: dict[int, float] = {}          # slot -> when to start a replacement
        self.settle_at: dict[int, tuple[float, int]] = {}  # slot -> when to recover, exit code
        self.started = 0
        self.stopping = False
        self.errors: list[str | GsearchError] = []
        self.kills = self.retries = 0
        for slot in range(workers):
            self.start(slot)

    def start(self, slot: int) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=worker_main, name=f"gsearch-worker-{slot}", daemon=True,
                                args=(self.spec, self.ds, slot, self.started, self.budget,
                                      writer))
        with spawning():
            proc.start()
        writer.close()
        self.procs[slot] = (proc, reader)
        self.index[slot] = self.started
        self.asked[slot] = set()
        self.started += 1

    def on_signal(self, signum, frame) -> None:
        first = not self.stopping
        self.stopping = True
        self.restart_at.clear()
        for proc, _ in self.procs.values():  # first signal: end trials as FAIL; second: kill
            if proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM if first else signal.SIGKILL)

    def run(self) -> None:
        progress = Progress(self.study, *self.progress)
        with signal_handlers(self.on_signal, (signal.SIGINT, signal.SIGTERM)):
            try:
                while self.procs or self.restart_at or self.settle_at:
                    self.poll(progress)
            finally:
                progress.close()
                for proc, _ in self.procs.values():   # an error in this process: stop them
                    proc.kill()
                    proc.join()
                with contextlib.suppress(Exception):
                    self.fail_left_running()
                if self.lock_path:
                    os.unlink(self.lock_path)
        if self.progress[1] != "off":
            with _unless_deleted(self.study):
                print(summary(self.study))
        if self.errors:
            error = next((e for e in self.errors if isinstance(e, StudyDeleted)), self.errors[0])
            raise error if isinstance(error, GsearchError) else GsearchError(error)
        if self.stopping:
            raise KeyboardInterrupt

    def poll(self, progress) -> None:
        readers = {reader: slot for slot, (_, reader) in self.procs.items()}
        sentinels = [proc.sentinel for proc, _ in self.procs.values()]
        for ready in wait(list(readers) + sentinels, timeout=0.5):
            if ready in readers:
                while ready.poll() and self.receive(readers[ready], ready, progress):
                    pass
        for slot, (proc, reader) in list(self.procs.items()):
            if proc.exitcode is not None:
                while reader.poll():  # its last reports
                    if not self.receive(slot, reader, progress):
                        break
                del self.procs[slot]
                if proc.exitcode < 0 and not self.stopping:   # killed: recover it in a moment
                    self.settle_at[slot] = (time.monotonic() + SETTLE, proc.exitcode)
                else:
                    self.ended(slot, proc.exitcode, progress)
        now = time.monotonic()
        for slot, (at, code) in list(self.settle_at.items()):
            if now >= at:
                del self.settle_at[slot]
                self.ended(slot, code, progress)
        for slot, at in list(self.restart_at.items()):
            if now >= at:
                del self.restart_at[slot]
                if self.budget.finished.value < self.budget.total:
                    self.start(slot)

    def receive(self, slot: int, reader, progress) -> bool:
        """One report: a trial asked for, a finished trial or an error message. False at
        the end of the pipe."""
        try:
            message = reader.recv()
        except Exception:  # EOF, or a report cut short by a killed worker
            return False
        if isinstance(message, (str, GsearchError)):
            self.errors.append(message)
            if isinstance(message, StorageLost):   # the server is gone: try once, not again
                give_up(study_storage(self.study))
        elif isinstance(message, tuple):   # ("asked", number)
            self.asked[slot].add(message[1])
        else:
            self.asked[slot].discard(message.number)
            self.deaths[slot].clear()   # it finished a trial: not crash-looping
            progress(self.study, message)
            for callback in self.callbacks:
                callback(self.study, message)
        return True

    def ended(self, slot: int, code: int, progress) -> None:
        if code == 0:
            return
        killed = code < 0 and not self.stopping
        failed = self.recover(slot, retry=killed)
        if not killed:
            if not self.stopping and not self.errors:
                self.errors.append(f"worker {slot} stopped with exit code {code}; see its "
                                   "message above")
            if not self.stopping:
                self.on_signal(signal.SIGTERM, None)
            return
        self.kills += 1
        now = time.monotonic()
        deaths = self.deaths[slot]
        deaths.append(now)
        while deaths and now - deaths[0] > CRASH_WINDOW:
            deaths.popleft()
        what = (f"worker {slot} was killed ({signal.Signals(-code).name}); "
                f"{len(failed)} running trial(s) failed and enqueued again")
        if len(deaths) >= CRASH_LIMIT:
            progress.write(f"{what}; it died {len(deaths)} times in {CRASH_WINDOW:.0f} s "
                           "without finishing a trial, so it is not restarted", file=sys.stderr)
            if not self.procs and not self.restart_at:
                self.errors.append(f"every worker keeps dying (the last: {what}); check memory "
                                   "and the workers' messages with -v")
            return
        delay = BACKOFF[min(len(deaths), len(BACKOFF)) - 1]
        progress.write(f"{what}; starting a replacement"
                       + (f" in {delay:.0f} s" if delay else ""), file=sys.stderr)
        self.restart_at[slot] = now + delay

    def _theirs(self, trial: optuna.trial.FrozenTrial, workers: set[str]) -> bool:
        return (trial.system_attrs.get(records.WORKER) in workers
                or any(trial.system_attrs.get(records.TAKEN_BY + w) for w in workers))

    def recover(self, slot: int, *, retry: bool) -> list[int]:
        """The dead worker of `slot`: its RUNNING trials fail (and are enqueued once more
        when `retry`), a trial it finished but never counted is counted, and its claims go
        back to the run, in that order, so that its retries run within the budget."""
        worker = f"{self.budget.run}/{self.index[slot]}"
        live = set().union(*(self.asked[s] for s in self.procs))   # reported by live workers
        others = {f"{self.budget.run}/{self.index[s]}" for s in self.procs}
        storage = study_storage(self.study)
        failed = []
        with self.budget.lock:
            trials = self.study.get_trials(deepcopy=False)
            for trial in trials:
                if (trial.number in live or not self._theirs(trial, {worker})
                        or self._theirs(trial, others)):   # a live worker took it after all
                    continue
                if trial.state == TrialState.RUNNING:
                    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                        if storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                            failed.append(trial)
                elif (finished(trial) and trial.number in self.asked[slot]
                      and self.budget.released[slot] != trial.number):
                    self.budget.finished.value += 1   # told, then killed before counting it
            if retry:
                for trial in failed:
                    self.retries += retry_trial(self.study, copy.deepcopy(trial))
            self.budget.drop(slot)
        self.asked[slot] = set()
        return [t.number for t in failed]

    def fail_left_running(self) -> None:
        """However the run ends: no trial created or taken by one of its workers stays
        RUNNING (a worker killed by a second Ctrl-C, or between ask and its report)."""
        workers = {f"{self.budget.run}/{i}" for i in range(self.started)}
        storage = study_storage(self.study)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._theirs(trial, workers):   # each on its own: a full disk may refuse one
                with contextlib.suppress(Exception):
                    storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)
