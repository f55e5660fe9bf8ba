"""Parallel search the Optuna way: worker processes that share one study in one storage.

Each worker runs `run_study` on its own handle of the study (its own sampler seed, torch
threads shared out so the cores are not oversubscribed); the storage is the only meeting
point, so workers on other machines join the same way. Around `run_study` this adds:

- a budget shared by the run's local workers, so `--trials` is the run's total: a worker
  holds a slot while it runs a trial and stops when no slot is left. (Optuna's
  MaxTrialsCallback counts after the fact and overshoots by up to N-1 with N workers.)
- interrupts that never leave a trial RUNNING: SIGINT/SIGTERM end the running trial as
  FAIL through Optuna's own path, and a trial caught between ask and tell is failed here.
- a parent that shows progress from what its workers report, forwards Ctrl-C/SIGTERM to
  them, and replaces a worker killed from outside (its trial is failed by the storage
  heartbeat and run again, see study.open_storage).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

import optuna

from gsearch import GsearchError
from gsearch.search.storage import has_heartbeats, safe_url

if TYPE_CHECKING:
    from gsearch.data.load import Dataset
    from gsearch.data.split import Split

TrialState = optuna.trial.TrialState
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # a failed trial gives its slot back
SEED_STRIDE = 1_000_003  # the k-th worker of a run samples with seed + k * SEED_STRIDE


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to join a run; picklable, sent to each worker process."""

    storage: str
    study: str
    sampler: str
    pruner: str
    seed: int | None  # sampler seed of the first worker (None: unseeded)
    train_seed: int
    device: str
    threads: int
    trials: int  # the run's total over all its workers
    timeout: float | None
    heartbeat: int | None
    fixed: dict = field(default_factory=dict)  # parameters held at one value (--fix)
    population: int = 1  # trials a worker trains at once (loop.run_study)
    verbose: bool = False


class _Budget:
    """The run's trial count, shared by its workers: a trial starts only with a claim
    (a worker training a population holds one claim per trial in flight)."""

    def __init__(self, ctx, workers: int, total: int):
        self.total = total
        self.lock = ctx.Lock()
        self.finished = ctx.Value("i", 0, lock=False)
        self.holding = ctx.Array("i", workers, lock=False)

    def claim(self, slot: int) -> bool:
        with self.lock:
            if self.finished.value + sum(self.holding) >= self.total:
                return False
            self.holding[slot] += 1
            return True

    def release(self, slot: int, finished: bool = False) -> None:
        with self.lock:
            self.holding[slot] = max(0, self.holding[slot] - 1)
            self.finished.value += finished

    def drop(self, slot: int) -> None:
        """A dead worker's claims (one per trial it had in flight) go back to the run."""
        with self.lock:
            self.holding[slot] = 0


class _Interrupt:
    """Signal handler: KeyboardInterrupt once, deferred while Optuna creates a trial.
    Optuna's warning with the traceback of the trial it ends as FAIL is muted: the parent
    (or the CLI) says in one line what happened."""

    def __init__(self):
        self.fired = self.pending = self.critical = False

    def __call__(self, signum, frame) -> None:
        if self.fired or self.pending:
            return
        if self.critical:
            self.pending = True
            return
        self.fire()

    def fire(self) -> None:
        self.fired = True
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self):
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending:
            self.fire()


class _Study(optuna.Study):
    """A study handle that remembers the trials it asked for, so that one whose tell was
    cut short by an interrupt is ended as FAIL instead of being left RUNNING."""

    def __init__(self, name: str, storage, sampler, pruner, interrupt: _Interrupt):
        super().__init__(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        self._interrupt = interrupt
        self._asked: set[int] = set()

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        with self._interrupt.deferred():
            trial = super().ask(fixed_distributions)
            self._asked.add(trial.number)
        return trial

    def fail_unfinished(self) -> None:
        from gsearch._compat import study_storage, trial_id
        from gsearch.search.study import INTERRUPTED_ATTR

        for trial in self.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in self._asked:
                study_storage(self).set_trial_user_attr(trial_id(trial), INTERRUPTED_ATTR, True)
                self.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


@contextlib.contextmanager
def _handlers(handler, signals):
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _spawning():
    """What a worker inherits: an ignored SIGINT (a terminal's Ctrl-C reaches the parent,
    which forwards it once as SIGTERM, instead of interrupting workers mid-start) and no
    progress bar (tqdm reads TQDM_DISABLE when it is imported)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        del os.environ["TQDM_DISABLE"]
        signal.signal(signal.SIGINT, previous)


def _work(spec: RunSpec, ds: Dataset, split: Split, *, slot: int, index: int, budget: _Budget,
          signals=(signal.SIGINT, signal.SIGTERM), report=None) -> None:
    """One worker: run_study on the shared study until the run's budget is spent."""
    import torch

    from gsearch.models.population import resolve_device
    from gsearch.search.loop import run_study
    from gsearch.search.storage import open_storage
    from gsearch.search.study import make_pruner, make_sampler

    torch.set_num_threads(spec.threads)
    seed = None if spec.seed is None else spec.seed + index * SEED_STRIDE
    interrupt = _Interrupt()
    storage = open_storage(spec.storage, heartbeat=spec.heartbeat)
    study = _Study(spec.study, storage, make_sampler(spec.sampler, seed, spec.fixed),
                   make_pruner(spec.pruner), interrupt)

    def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        budget.release(slot, trial.state in COUNTED)
        if report is not None:
            report(trial)

    with _handlers(interrupt, signals):
        try:
            run_study(study, ds, split, trials=spec.trials, device=resolve_device(spec.device),
                      seed=spec.train_seed, timeout=spec.timeout, population=spec.population,
                      callbacks=[account], claim=lambda: budget.claim(slot), lock=budget.lock)
        except KeyboardInterrupt:
            study.fail_unfinished()
            raise


def _child(spec: RunSpec, ds: Dataset, split: Split, slot: int, index: int, budget: _Budget,
           conn) -> None:
    """A worker process: quiet (the parent shows progress), stopped by SIGTERM."""
    sys.stdout = open(os.devnull, "w")  # summaries; tqdm is off through TQDM_DISABLE
    optuna.logging.set_verbosity(optuna.logging.INFO if spec.verbose else optuna.logging.WARNING)
    try:
        _work(spec, ds, split, slot=slot, index=index, budget=budget, signals=(signal.SIGTERM,),
              report=conn.send)
    except KeyboardInterrupt:
        sys.exit(130)
    except GsearchError as e:
        conn.send(str(e))
        sys.exit(1)
    except Exception as e:  # a storage server gone, a bug: one line; -v shows the traceback
        if spec.verbose:
            traceback.print_exc()
        lines = str(e).strip().splitlines() or [""]
        conn.send(f"worker {slot} failed: {type(e).__name__}: {safe_url(lines[0])}"
                  f"{'' if spec.verbose else ' (run with -v for the traceback)'}")
        sys.exit(1)


def start_workers_server():
    """The context workers start from. forkserver: they fork from a clean server process
    that imported torch and gsearch once (no CUDA state, no storage connection inherited);
    called early, its imports overlap with the parent's. spawn where there is no fork."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "gsearch.search.loop",
                                "gsearch.search.storage", "gsearch.search.parallel"])
    with _spawning():
        forkserver.ensure_running()
    return ctx


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_search(spec: RunSpec, ds: Dataset, split: Split, study: optuna.Study, workers: int) -> None:
    """Run spec.trials trials with `workers` processes (1: in this process).
    Raises KeyboardInterrupt after a clean stop on Ctrl-C/SIGTERM."""
    from gsearch.search.progress import Progress, summary

    if workers > 1:
        _Parent(spec, ds, split, study, workers).run()
        return
    progress = Progress(study, spec.trials)
    try:
        _work(spec, ds, split, slot=0, index=0, budget=_Budget(mp.get_context(), 1, spec.trials),
              report=lambda trial: progress(study, trial))
    finally:
        progress.close()
        print(summary(study))


class _Parent:
    """Starts the workers, shows their progress, forwards signals, replaces killed ones."""

    def __init__(self, spec: RunSpec, ds: Dataset, split: Split, study: optuna.Study,
                 workers: int):
        self.spec, self.ds, self.split, self.study = spec, ds, split, study
        self.ctx = start_workers_server()
        self.budget = _Budget(self.ctx, workers, spec.trials)
        self.procs: dict[int, tuple[mp.Process, object]] = {}
        self.started = 0
        self.stopping = False
        self.errors: list[str] = []
        for slot in range(workers):
            self.start(slot)

    def start(self, slot: int) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child, name=f"gsearch-worker-{slot}", daemon=True,
                                args=(self.spec, self.ds, self.split, slot, self.started,
                                      self.budget, writer))
        with _spawning():
            proc.start()
        writer.close()
        self.procs[slot] = (proc, reader)
        self.started += 1

    def on_signal(self, signum, frame) -> None:
        first = not self.stopping
        self.stopping = True
        for proc, _ in self.procs.values():  # first signal: end trials as FAIL; second: kill
            if proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM if first else signal.SIGKILL)

    def run(self) -> None:
        from gsearch.search.progress import Progress, summary

        progress = Progress(self.study, self.spec.trials)
        with _handlers(self.on_signal, (signal.SIGINT, signal.SIGTERM)):
            try:
                while self.procs:
                    self.poll(progress)
            finally:
                progress.close()
        print(summary(self.study))
        if self.errors:
            raise GsearchError(self.errors[0])
        if self.stopping:
            raise KeyboardInterrupt

    def poll(self, progress) -> None:
        readers = [reader for _, reader in self.procs.values()]
        sentinels = [proc.sentinel for proc, _ in self.procs.values()]
        for ready in wait(readers + sentinels, timeout=1.0):
            if ready in readers:
                self.receive(ready, progress)
        for slot, (proc, reader) in list(self.procs.items()):
            if proc.exitcode is not None:
                while reader.poll():  # its last reports
                    if not self.receive(reader, progress):
                        break
                del self.procs[slot]
                self.ended(slot, proc.exitcode, progress)

    def receive(self, reader, progress) -> bool:
        """One report: a finished trial or an error message. False at the end of the pipe."""
        try:
            message = reader.recv()
        except Exception:  # EOF, or a report cut short by a killed worker
            return False
        if isinstance(message, str):
            self.errors.append(message)
        else:
            progress(self.study, message)
        return True

    def ended(self, slot: int, code: int, progress) -> None:
        if code == 0 or self.stopping:
            return
        if code < 0 and self.started < 2 * len(self.budget.holding):
            self.budget.drop(slot)
            fate = ("are failed by the heartbeat and run again" if self.spec.heartbeat
                    and has_heartbeats(self.spec.storage) else "stay RUNNING (no heartbeat)")
            progress.write(f"worker {slot} was killed ({signal.Signals(-code).name}); its "
                               f"running trials {fate}; starting a replacement", file=sys.stderr)
            self.start(slot)
            return
        if not self.errors:
            self.errors.append(f"worker {slot} stopped with exit code {code}; see its message "
                               "above")
        self.on_signal(signal.SIGTERM, None)
