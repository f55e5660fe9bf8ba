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

from gsearch import Interrupted
from gsearch.data.load import Dataset, describe_data, load_dataset, resolve_data
from gsearch.models.population import resolve_device
from gsearch.models.validation import DEFAULT_METRIC, check_metric
from gsearch.search._spawn import cpu_count, worker_cap
from gsearch.search.export import Published, publish
from gsearch.search.objectives import Objectives
from gsearch.search.parallel import Workers, run_search
from gsearch.search.requests import RunRequest
from gsearch.search.space import SearchSpace, parse_fixed, parse_ranges, resolve_space, space_name
from gsearch.search.storage import open_storage, safe_url
from gsearch.search.tracking import mlflow_callback
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


def run_study(request: RunRequest, *, echo: Echo = print, started: float | None = None,
              ds: Dataset | None = None) -> RunOutcome:
    """Run `request` (checked with request.check() first). `started`: when the request began
    (time.monotonic(); --timeout counts from there), now by default. `ds`: the table, when the
    caller holds it already (the Python API's DataFrame, data.frame; request.data then only
    names it)."""
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
    if ds is None:
        ds = load_dataset(resolve_data(request.data), label=request.label, drop=request.drop,
                          group=protocol.group, categorical=request.categorical, task=request.task)
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
    storage = (optuna.storages.InMemoryStorage() if request.storage is None else
               open_storage(request.storage, heartbeat=request.heartbeat or None,
                            retry=request.storage_retry))
    study = open_study(storage, request.study, protocol=protocol, ds=ds, strategy=strategy,
                       objectives=objectives, space=sized, space_name=space_name(space))
    echo(f"data: {describe_data(ds)}")
    if ds.task == "regression" or "categorical" in ds.kinds or request.metric or ds.unlabelled:
        echo(f"table: {describe_table(ds, request.task)}")
    if protocol.grouping != "track":
        echo(f"protocol: {protocol.describe()}")
    made = SearchSpace.of(study)
    if made != SearchSpace(made.rows) or made.epochs != SearchSpace().epochs:   # GTZAN's: no word
        echo(f"search space: {made.describe()}")
    if request.warm_start:
        before = len(study.get_trials(deepcopy=False))
        for params in warm:
            study.enqueue_trial(params, skip_if_exists=True)
        echo(f"warm start: {len(study.get_trials(deepcopy=False)) - before} of the best "
             f"configurations of study '{request.warm_start}' in {safe_url(source)} run first "
             f"({len(warm)} fit this search space; each runs once per study)")
    where = "memory" if request.storage is None else safe_url(request.storage)
    echo(f"study '{request.study}' in {where}: {len(ds.y)} rows "
         f"({len(split.train)} train / {len(split.val)} validation / {len(split.test)} test, "
         f"test never used by the search), device {device}; {objectives.describe()}")
    if request.mlflow is not None:
        echo(f"mlflow: every finished trial logged to {safe_url(request.mlflow)}, experiment "
             f"'{request.study}'")
    before = finished_count(study)
    timeout = request.timeout
    try:
        run_search(study, ds, trials=request.trials, space=space, device=device,
                   seed=request.seed or 0,
                   timeout=None if timeout is None else max(0.0, timeout - (time.monotonic() - started)),
                   population=request.population, callbacks=callbacks, progress=request.progress,
                   workers=Workers(workers, request.storage, strategy, request.heartbeat or None,
                                   threads, request.verbose, request.storage_retry))
    except KeyboardInterrupt:
        done = finished_count(study) - before
        if request.trials is None:
            raise Interrupted(f"finished trials are saved ({done} in this run); trials in flight "
                              "are marked interrupted") from None
        raise Interrupted(
            f"finished trials are saved ({done} of this run's {request.trials}); trials in flight are "
            f"marked interrupted. Run again with --trials {max(1, request.trials - done)} to finish "
            f"this run's count (--trials N always adds N more)") from None
    done = finished_count(study) - before
    if timeout is not None and request.trials is not None and done < request.trials:
        echo(f"deadline: --timeout {timeout:g} stopped the run after {done} of the {request.trials} "
             "trials asked (--trials) finished")
    outcome = RunOutcome(study, done)
    if request.export is None or not outcome.completed:
        return outcome
    return RunOutcome(study, done, publish(study, request.export, storage=request.storage,
                                           device=device, ds=ds, ensemble=request.ensemble,
                                           level=request.level))
