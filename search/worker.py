"""One worker of a search: its own handle of the study (`StudyHandle`), the trial loop on it
until the run's budget is spent (`run_loop`), and the worker process's body (`worker_main`).

`parallel.run_search` runs `run_loop` in this process, or starts `Workers.count` processes
that each run `worker_main`. What they share: the run (`Run`, picklable, sent to each worker)
and its trial count (`Budget`, in shared memory, under a lock the kernel releases when its
holder dies). Interrupts never leave a trial RUNNING: SIGINT/SIGTERM ask the loop to stop at
its next safe point (never inside a storage write), and the trials in flight end as FAIL,
marked interrupted; a second signal stops at once. Every trial a worker creates carries its
name (system attribute gsearch:worker), and a waiting trial it takes is marked before it
takes it, so the parent knows a dead worker's trials exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import signal
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass
from typing import Sequence

import optuna
import torch

from gsearch import GsearchError
from gsearch.data.load import Dataset
from gsearch.search import records
from gsearch.search._compat import study_id, study_storage, take_waiting_trials_with, trial_id
from gsearch.search.loop import Callback, Space, TrialLoop
from gsearch.search.objectives import Objectives
from gsearch.search.protocol import Protocol
from gsearch.search.storage import STORAGE_RETRY, DiskFull, StorageStop, open_storage, safe_url
from gsearch.search.study import (Strategy, StudyDeleted, finished, quiet_log, set_log_level,
                                  study_deleted)

TrialState = optuna.trial.TrialState


class _FileLock:
    """A lock shared by a run's processes that the kernel releases when its holder dies
    (flock), so a worker killed while holding it does not stall the others. Picklable;
    each process opens the file itself."""

    def __init__(self, path: str):
        self.path, self._fd, self._pid = path, None, None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __enter__(self):
        import fcntl   # lazy: POSIX only (elsewhere the run uses a plain process lock)

        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT), os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import fcntl   # lazy: POSIX only

        fcntl.flock(self._fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Workers:
    """How worker processes join a run: what they cannot take from the caller's study
    handle, since each opens the storage and builds its sampler and pruner itself."""

    count: int
    storage: str                  # the URL every worker opens
    strategy: Strategy            # its sampler and pruner (seeded apart per worker)
    heartbeat: int | None = None  # seconds between a running trial's heartbeats
    threads: int = 1              # torch CPU threads per worker
    verbose: bool = False         # Optuna's log and tracebacks of worker errors
    storage_retry: float = STORAGE_RETRY   # seconds a database server may be unreachable


@dataclass(frozen=True)
class Run:
    """What a worker process needs to join a run; picklable, sent to each worker."""

    study: str
    trials: int                   # the run's total over all its workers
    space: Space
    max_epochs: int               # the pruner's scale: the study's space's longest trial
    device: str
    seed: int                     # training seeds: seed + trial number
    timeout: float | None
    population: int
    done: int                     # the study's trials when the run began (sampler seeds)
    workers: Workers


class Budget:
    """The run's trial count, shared by its workers: a trial starts only with a claim
    (a worker training a population holds one claim per trial in flight)."""

    def __init__(self, ctx, workers: int, total: int, lock_path: str | None = None):
        self.total = total
        self.run = uuid.uuid4().hex[:12]   # names this run's workers: run/index
        self.lock = _FileLock(lock_path) if lock_path else ctx.Lock()
        self.finished = ctx.Value("i", 0, lock=False)
        self.holding = ctx.Array("i", workers, lock=False)
        self.released = ctx.Array("i", [-1] * workers, lock=False)  # last trial counted per slot

    def claim(self, slot: int, force: bool = False) -> bool:
        """`force`: a retry the worker's heartbeat enqueued, run even past the total."""
        with self.lock:
            if not force and self.finished.value + sum(self.holding) >= self.total:
                return False
            self.holding[slot] += 1
            return True

    def release(self, slot: int, finished: bool = False, number: int = -1) -> None:
        with self.lock:
            self.holding[slot] = max(0, self.holding[slot] - 1)
            self.finished.value += finished
            self.released[slot] = number

    def drop(self, slot: int) -> None:
        """A dead worker's claims (one per trial it had in flight) go back to the run.
        Called with the lock held."""
        self.holding[slot] = 0


class _Interrupt:
    """Signal handler that asks the trial loop to stop. The loop stops at its next safe
    point (before it asks for a trial, after an epoch), so that no storage write, lock or
    trial creation is cut in half (a KeyboardInterrupt inside a database commit leaves the
    storage's session unusable, and the trials in flight could not be ended). A second
    signal stops at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class StudyHandle(optuna.Study):
    """A study handle that remembers the trials it asked for, so that one whose tell was
    cut short by an interrupt is ended as FAIL instead of being left RUNNING. With a
    worker `name`, each trial it creates carries the name from its first write, a waiting
    trial it takes is marked before it is taken, and `on_ask(number)` tells the parent."""

    def __init__(self, name: str, storage, sampler, pruner, *, worker: str | None = None,
                 on_ask=None):
        """`storage`, `sampler`, `pruner`: a handle's own (Study.of reuses another's)."""
        super().__init__(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        self._asked: set[int] = set()
        self._worker, self._on_ask = worker, on_ask
        if worker:
            take_waiting_trials_with(self, self._take_or_create)

    @classmethod
    def of(cls, study: optuna.Study) -> "StudyHandle":
        """The same study through the same storage, sampler and pruner: the caller's handle,
        remembering what it asks for."""
        return cls(study.study_name, study_storage(study), study.sampler, study.pruner)

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        trial = super().ask(fixed_distributions)
        self._asked.add(trial.number)
        if self._on_ask is not None:
            self._on_ask(trial.number)
        return trial

    def _take_or_create(self) -> int:
        """What ask() does for a trial, the worker's way: a waiting trial, marked as ours
        before it is taken (a mark left on a trial another worker took is cleared), else a new
        trial that carries our name from its first write."""
        storage, key = study_storage(self), records.TAKEN_BY + self._worker
        for trial in storage.get_all_trials(study_id(self), deepcopy=False,
                                            states=(TrialState.WAITING,)):
            try:
                storage.set_trial_system_attr(trial_id(trial), key, True)
                if storage.set_trial_state_values(trial_id(trial), state=TrialState.RUNNING):
                    return trial_id(trial)
                storage.set_trial_system_attr(trial_id(trial), key, False)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        named = optuna.trial.FrozenTrial(   # what Study.ask creates, with our name
            number=-1, state=TrialState.RUNNING, value=None,
            datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
            distributions={}, user_attrs={}, system_attrs={records.WORKER: self._worker},
            intermediate_values={}, trial_id=-1)
        return storage.create_new_trial(study_id(self), template_trial=named)

    def fail_unfinished(self, interrupted: bool = True) -> None:
        # best effort: after a second signal cut a storage write short, or on a full disk, the
        # storage may refuse; the parent (or a later run's heartbeat) then ends what is left
        with contextlib.suppress(Exception):
            for trial in self.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.number not in self._asked:
                    continue
                if interrupted:   # (suppressed on its own: the FAIL below matters more)
                    with contextlib.suppress(Exception):
                        study_storage(self).set_trial_user_attr(trial_id(trial),
                                                                records.INTERRUPTED, True)
                with contextlib.suppress(Exception):
                    self.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


@contextlib.contextmanager
def signal_handlers(handler, signals):
    """`handler` for `signals` meanwhile; none off the main thread, where Python takes no
    handler (a search run from a thread, e.g. the Python API under a threaded joblib)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_loop(study: StudyHandle, ds: Dataset, run: Run, *, slot: int, budget: Budget,
          signals=(signal.SIGINT, signal.SIGTERM), callbacks: Sequence[Callback] = ()) -> None:
    """The trial loop on one handle of the study until the run's budget is spent; stopped
    at its next safe point by `signals`, its trials in flight then FAIL, marked interrupted."""
    interrupt = _Interrupt()

    def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        budget.release(slot, finished(trial), trial.number)

    metric = Objectives.of(study).metric   # what each trial's validation is scored by
    data = [dataclasses.replace(d, metric=metric) for d in Protocol.of(study).trial_data(ds)]
    loop = TrialLoop(study, data, space=run.space,
                     device=torch.device(run.device), seed=run.seed, size=run.population,
                     callbacks=[account, *callbacks], claim=lambda force=False: budget.claim(slot, force),
                     lock=budget.lock, stop=lambda: interrupt.requested,
                     release=lambda trial: account(study, trial))   # a trial another run ended
    with signal_handlers(interrupt, signals):
        try:
            loop.run(run.trials, run.timeout)
        except KeyboardInterrupt:
            with quiet_log():   # the parent (or the CLI) says in one line what happened
                study.fail_unfinished()
            raise
        except DiskFull:   # what the storage can still take ends its trials
            study.fail_unfinished(interrupted=False)
            raise
        if interrupt.requested:   # the signal came as the last trials finished: still a stop
            raise KeyboardInterrupt


def worker_main(run: Run, ds: Dataset, slot: int, index: int, budget: Budget, conn) -> None:
    """A worker process: its own handle of the study, quiet (the parent shows progress),
    stopped by SIGTERM."""
    workers = run.workers
    set_log_level(workers.verbose)   # as the parent's CLI set it
    study = None
    try:
        torch.set_num_threads(workers.threads)
        study = StudyHandle(run.study, open_storage(workers.storage, heartbeat=workers.heartbeat,
                                               retry=workers.storage_retry),
                       workers.strategy.make_sampler(run.done, worker=index),
                       workers.strategy.make_pruner(run.max_epochs), worker=f"{budget.run}/{index}",
                       on_ask=lambda number: conn.send(("asked", number)))
        run_loop(study, ds, run, slot=slot, budget=budget, signals=(signal.SIGTERM,),
              callbacks=[lambda study, trial: conn.send(trial)])
    except KeyboardInterrupt:
        sys.exit(130)
    except GsearchError as e:   # a StorageStop goes as it is: the parent acts on it
        conn.send(e if isinstance(e, StorageStop) else str(e))
        sys.exit(1)
    except Exception as e:  # a storage server gone, a bug: one line; -v shows the traceback
        if study is not None and study_deleted(study):   # the parent says it in one line
            conn.send(StudyDeleted(f"study '{run.study}' was deleted"))
            sys.exit(1)
        if workers.verbose:
            traceback.print_exc()
        lines = str(e).strip().splitlines() or [""]
        conn.send(f"worker {slot} failed: {type(e).__name__}: {safe_url(lines[0])}"
                  f"{'' if workers.verbose else ' (run with -v for the traceback)'}")
        sys.exit(1)
