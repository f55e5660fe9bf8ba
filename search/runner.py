"""`run_study`: one search, from a RunRequest to finished trials (and, on request, a model).

The library function behind `gsearch run` (and the Python API): it loads and prepares the
data, sizes the search space to it, opens or resumes the study (checked against the data and
protocol it recorded), runs the trials (parallel.run_search, here or in worker processes) and,
with `request.export`, exports the best trials in the same process. What it has to say goes
to `echo`, one line at a time; a bad input is a GsearchError, an interrupt an `Interrupted`
that says which --trials finishes the run's count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import optuna
import torch

from gsearch import GsearchError, Interrupted
from gsearch.data.columns import missing_words
from gsearch.data.load import Dataset, describe_data
from gsearch.models.population import resolve_device
from gsearch.models.validation import DEFAULT_METRIC, check_metric
from gsearch.search import records
from gsearch.search._spawn import cpu_count, worker_cap
from gsearch.search.export import Published, publish
from gsearch.search.objectives import Objectives
from gsearch.search.parallel import run_search
from gsearch.search.requests import RunRequest
from gsearch.search.selection import deadline_stopped
from gsearch.search.space import SearchSpace, parse_fixed, parse_ranges, resolve_space, space_name
from gsearch.search.storage import open_storage, safe_url
from gsearch.search.tracking import mlflow_callback
from gsearch.search.worker import Workers
from gsearch.search.study import (Strategy, finished_count, load_study, open_study, set_log_level,
                                  state_counts, warm_start_configs)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunOutcome:
    """What a run did: the study, its trials finished by this run, and the export if any."""

    study: optuna.Study
    finished: int
    published: Published | None = None

    @property
    def completed(self) -> int:
        return state_counts(self.study)["complete"]

    @property
    def exportable(self) -> bool:
        """Whether export-best has trials to export: completed ones, or ones a deadline stopped."""
        return bool(self.completed or deadline_stopped(self.study))


# The share of --timeout the search always gets, however long the start-up took (the imports,
# the data, the study): on a quiet 2-core machine start-up takes a quarter of --timeout 10, so
# the deadline stays where it was; on a busy one (start-up 7-19 s at load 4-6) the search still
# runs, instead of none of it (issue 35, docs/benchmarks.md "A deadline under load").
SEARCH_SHARE = 0.75


def search_seconds(timeout: float | None, started: float) -> tuple[float | None, float]:
    """The search's seconds under --timeout `timeout` counted from `started`, and the seconds
    the deadline moved (0 unless the start-up took more than its quarter)."""
    if timeout is None:
        return None, 0.0
    left, least = timeout - (time.monotonic() - started), SEARCH_SHARE * timeout
    return max(left, least), max(0.0, least - left)


# Fewer validation rows than this: the run suggests --cv (dozens of trials tie at the top of a
# few dozen rows: wine's 29, cancer's 92 in docs/benchmarks.md)
SMALL_VALIDATION = 100


def table_metric(ds: Dataset, metric: str | None) -> str:
    """The metric a search of `ds` optimizes: `metric` (checked against the table's task and
    classes), or its task's default."""
    metric = metric or DEFAULT_METRIC[ds.task]
    check_metric(metric, ds.task, len(ds.classes))
    return metric


def describe_table(ds: Dataset, asked: str = "auto") -> str:
    """The task and what the table holds, for the run's first lines: "regression (label
    'target': numbers, auto), 2 categorical features, 19 empty cells, 3 rows without a label
    left out"."""
    how = "auto" if asked == "auto" else "--task"
    what = (f"{ds.task} (label {ds.label!r}: {len(ds.classes)} classes, {how})"
            if ds.task == "classification" else f"{ds.task} (label {ds.label!r}: numbers, {how})")
    categorical = [f for f, k in zip(ds.features, ds.kinds) if k == "categorical"]
    parts = [what]
    if categorical:
        parts.append(f"{len(categorical)} categorical feature(s): {', '.join(categorical[:5])}"
                     + (" ..." if len(categorical) > 5 else ""))
    numeric = np.array([k != "categorical" for k in ds.kinds] or [True] * len(ds.features))
    empty = int(np.isnan(ds.X[:, numeric]).sum()) + int(np.isnan(ds.X[:, ~numeric]).sum())
    if empty:
        parts.append(f"{empty:,} empty cells (filled in as the training rows say)")
    if ds.unlabelled:
        parts.append(f"{ds.unlabelled:,} row(s) without a label left out")
    return ", ".join(parts)


def setup_torch(threads: int, device: str) -> torch.device:
    """Torch's CPU threads, and the device name resolved once (auto: CUDA when there is one)."""
    torch.set_num_threads(threads)
    return resolve_device(device)


def _storage(request: RunRequest) -> optuna.storages.BaseStorage:
    """The run's storage: its URL's, or one in memory (the Python API without a storage)."""
    if request.storage is None:
        return optuna.storages.InMemoryStorage()
    return open_storage(request.storage, heartbeat=request.heartbeat or None,
                        retry=request.storage_retry)


def _describe(echo: Echo, request: RunRequest, ds: Dataset, study: optuna.Study, *,
              own_space: bool) -> None:
    """What a run says of its table before it searches: the data, the table's kinds and task
    (where not GTZAN's), the protocol (where rows are grouped), the search space (where not
    GTZAN's; a --space says nothing: it is the user's own)."""
    protocol = request.protocol
    echo(f"data: {describe_data(ds)}")
    if ds.task == "regression" or "categorical" in ds.kinds or request.metric or ds.unlabelled:
        echo(f"table: {describe_table(ds, request.task)}")
    if protocol.grouping != "track":
        echo(f"protocol: {protocol.describe()}")
    made = SearchSpace.of(study)
    if not own_space and (made != SearchSpace(made.rows) or made.epochs != SearchSpace().epochs):
        echo(f"search space: {made.describe()}")


def _interrupted(trials: int | None, done: int) -> Interrupted:
    """What a Ctrl-C (or SIGTERM) says, with the --trials that finishes the run's count."""
    if trials is None:
        return Interrupted(f"finished trials are saved ({done} in this run); trials in flight "
                           "are marked interrupted")
    return Interrupted(
        f"finished trials are saved ({done} of this run's {trials}); trials in flight are "
        f"marked interrupted. Run again with --trials {max(1, trials - done)} to finish "
        f"this run's count (--trials N always adds N more)")


def _check_missing(study: optuna.Study, missing: str | None) -> None:
    """A study resumed with other words for an empty cell (--missing) than it read its table
    with would search other rows and classes: refused, saying the study's."""
    recorded = study.user_attrs.get(records.MISSING_WORDS)
    if missing_words(recorded) == missing_words(missing):
        return

    def said(words):
        return "the default words (no --missing)" if words is None else f"--missing {words!r}"
    raise GsearchError(f"study '{study.study_name}' read its table with {said(recorded)}, this run "
                       f"with {said(missing)}: resume it with "
                       f"{'no --missing' if recorded is None else f'--missing {recorded!r}'}, "
                       "or pass a new --study")


def _record_reading(study: optuna.Study, request: RunRequest) -> None:
    """A new study records how its table was read (the separator, the words of an empty cell),
    so that export reads the file the same way; a resumed one refuses other missing words."""
    if request.sep is not None and len(study.trials) == 0:
        study.set_user_attr(records.SEP, request.sep)
    if request.missing is not None and len(study.trials) == 0:
        study.set_user_attr(records.MISSING_WORDS, request.missing)
    _check_missing(study, request.missing)


def run_study(request: RunRequest, *, echo: Echo = print, started: float | None = None,
              ds: Dataset | None = None) -> RunOutcome:
    """Run `request`, which the caller has checked (request.check(): the CLI and the estimators
    do). `started`: when the request began (time.monotonic(); --timeout counts from there), now
    by default. `ds`: the table, when the caller holds it already (the Python API's DataFrame,
    data.frame; request.data then only names it)."""
    started = time.monotonic() if started is None else started
    space = resolve_space(request.space)
    workers, _ = worker_cap(request.workers, request.trials or request.workers)
    set_log_level(request.verbose)
    threads = max(1, min(request.threads, cpu_count() // workers))   # per worker process
    device = setup_torch(threads, request.device)
    objectives = Objectives.parse(request.objectives, max_params=request.max_params,
                                  max_latency_ms=request.max_latency_ms)
    protocol = request.protocol
    # data errors surface before the storage is touched
    ds = request.load() if ds is None else ds
    ds = protocol.prepare(ds)
    objectives = replace(objectives, metric=table_metric(ds, request.metric))
    split = protocol.split(ds)                  # and split errors (too few tracks of a class)
    sized = SearchSpace.for_table(ds, protocol.train_rows(ds))   # a new study's space
    if request.ranges:
        sized = replace(sized, ranges=parse_ranges(request.ranges, sized))
    strategy = Strategy(request.sampler, request.pruner, request.seed, parse_fixed(request.fix, sized))
    warm = []   # read before this run's study is touched: a bad source leaves it as it was
    source = request.warm_start_storage or request.storage
    if request.warm_start:
        warm = warm_start_configs(load_study(open_storage(source, must_exist=True), request.warm_start),
                                  strategy.fixed, space=sized)[:request.trials]
    callbacks = [] if request.mlflow is None else [mlflow_callback(request.mlflow, objectives)]
    study = open_study(_storage(request), request.study, protocol=protocol, ds=ds, strategy=strategy,
                       objectives=objectives, space=sized, space_name=space_name(space))
    _record_reading(study, request)
    _describe(echo, request, ds, study, own_space=space is not None)
    if request.warm_start:
        before = len(study.get_trials(deepcopy=False))
        for params in warm:
            study.enqueue_trial(params, skip_if_exists=True)
        echo(f"warm start: {len(study.get_trials(deepcopy=False)) - before} of the best "
             f"configurations of study '{request.warm_start}' in {safe_url(source)} run first "
             f"({len(warm)} fit this search space; each runs once per study)")
    if protocol.cv == 1 and len(split.val) < SMALL_VALIDATION:
        echo(f"note: the validation split holds {len(split.val)} rows: many trials will tie at the "
             "top of so few, and the best of them is partly luck; --cv 5 scores each trial on "
             "5 folds of train+validation instead")
    where = "memory" if request.storage is None else safe_url(request.storage)
    echo(f"study '{request.study}' in {where}: {len(ds.y)} rows "
         f"({len(split.train)} train / {len(split.val)} validation / {len(split.test)} test, "
         f"test never used by the search), device {device}; {objectives.describe()}")
    if request.mlflow is not None:
        echo(f"mlflow: every finished trial logged to {safe_url(request.mlflow)}, experiment "
             f"'{request.study}'")
    before, stopped_before = finished_count(study), len(deadline_stopped(study))
    timeout = request.timeout
    seconds, moved = search_seconds(timeout, started)
    if moved >= 1.0:   # (a --timeout of a second or less: no word)
        echo(f"note: start-up took {time.monotonic() - started:.1f} s of --timeout {timeout:g} (a "
             f"busy machine?); the search gets {seconds:.1f} s all the same, so it ends {moved:.1f} s "
             "after the deadline")
    try:
        run_search(study, ds, trials=request.trials, space=space, device=device,
                   seed=request.seed or 0, timeout=seconds,
                   population=request.population, callbacks=callbacks, progress=request.progress,
                   workers=Workers(workers, request.storage, strategy, request.heartbeat or None,
                                   threads, request.verbose, request.storage_retry))
    except KeyboardInterrupt:
        raise _interrupted(request.trials, finished_count(study) - before) from None
    done = finished_count(study) - before
    stopped = len(deadline_stopped(study)) - stopped_before   # pruned by the deadline, in flight
    if timeout is not None and request.trials is not None and (done < request.trials or stopped):
        echo(f"deadline: --timeout {timeout:g} stopped the run after {done - stopped} of the "
             f"{request.trials} trials asked (--trials) finished"
             + (f"; it stopped {stopped} in flight" if stopped else ""))
    outcome = RunOutcome(study, done)
    if request.export is None or not outcome.exportable:
        return outcome
    return RunOutcome(study, done, publish(study, request.export, storage=request.storage,
                                           device=device, ds=ds, ensemble=request.ensemble,
                                           level=request.level, force=request.force))
