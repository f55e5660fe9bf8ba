"""What a caller asks of gsearch's library, one frozen dataclass per job: a search
(`RunRequest`), an export (`ExportRequest`), a benchmark over splits (`EvaluateRequest`).

The CLI turns a command's options into one of these and hands it to one library function
(search.runner.run_study, search.export.export_study, search.evaluate.evaluate); the Python
API builds the same requests. Each request's `check()` makes the checks that need neither
torch, Optuna nor pandas (a device that cannot exist here, a data file that cannot be read, a
malformed storage URL, a study name no storage keeps, an impossible option), so that a bad
input is answered in milliseconds, before the library's heavy imports. This module imports
nothing heavy.

>>> RunRequest(trials=0).check()
Traceback (most recent call last):
gsearch.GsearchError: --trials must be at least 1, got 0
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gsearch import GsearchError
from gsearch.data.files import check_readable, check_size
from gsearch.data.header import check_table
from gsearch.data.schema import TASKS
from gsearch.data.schema import ARTIST_FOLDS, LABEL_COLUMN
from gsearch.models.folder import Owner, check_target
from gsearch.models.validation import METRICS
from gsearch.search.protocol import Protocol
from gsearch.search.space import check_log_scale
from gsearch.search.storage import DEFAULT_STORAGE, check_study_name, check_url, safe_url
from gsearch.search.storage.url import storage_identity
from gsearch.search.study import DEFAULT_POPULATION, DEFAULT_PRUNER, DEFAULT_STUDY, check_study_exists

DEVICES = ("auto", "cpu", "cuda")
# How a run shows its progress (search.progress.Progress): a bar on a terminal and plain lines
# elsewhere (the CLI); tqdm.auto's bar anywhere, a notebook's widget too; nothing
PROGRESS = ("auto", "bar", "off")


def check_device(device: str) -> None:
    """An unknown device, or --device cuda on a Linux machine without an NVIDIA driver (no
    /proc/driver/nvidia, no libcuda for the loader): refused in milliseconds, before torch is
    imported. Where a driver is there, torch decides (models.population.resolve_device), as it
    does on other systems."""
    if device not in DEVICES:
        raise GsearchError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device != "cuda" or sys.platform != "linux" or os.path.exists("/proc/driver/nvidia"):
        return
    import ctypes.util   # only --device cuda asks (a file search of the loader's paths)

    if ctypes.util.find_library("cuda") is None:
        raise GsearchError("--device cuda was asked for but CUDA is not available here (no NVIDIA "
                           "driver found); use --device cpu or --device auto")


def study_options(study: str, storage: str) -> str:
    """The options that name a study in a suggested command."""
    return f"--study {study}" + ("" if storage == DEFAULT_STORAGE else f" --storage {safe_url(storage)}")


def parse_integers(text: str, option: str, example: str) -> tuple[int, ...]:
    """A comma-separated list of integers (--split-seeds, --test-folds)."""
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise GsearchError(f"{option} must be integers separated by commas, got {text!r}; "
                           f"e.g. {example}") from None


def check_test_folds(folds: tuple[int, ...], shown: str) -> None:
    """Distinct folds of GTZAN's published artist-filtered split (data.schema.ARTIST_FOLDS)."""
    if not folds or len(set(folds)) != len(folds) or not set(folds) <= set(ARTIST_FOLDS):
        raise GsearchError(f"--test-folds takes distinct folds among "
                           f"{', '.join(map(str, ARTIST_FOLDS))}, got {shown!r}; e.g. 1,2,3")


def _check_task(task: str, metric: str | None) -> None:
    """A known task, and a metric that scores it (when the task is given, not auto)."""
    if task not in TASKS:
        raise GsearchError(f"unknown --task {task!r}; use {', '.join(TASKS)}")
    if metric is None:
        return
    if metric not in METRICS:
        raise GsearchError(f"unknown --metric {metric!r}; use one of {', '.join(METRICS)}")
    if task != "auto" and METRICS[metric].task != task:
        raise GsearchError(f"--metric {metric} scores a {METRICS[metric].task}, --task is {task}: "
                           f"use one of {', '.join(n for n, m in METRICS.items() if m.task == task)}")


def _paths(request, *names: str) -> None:
    """A request's path fields as Paths (a caller of the library may give text)."""
    for name in names:
        value = getattr(request, name)
        if value is not None and not isinstance(value, Path):
            object.__setattr__(request, name, Path(value))


def _positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise GsearchError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_mlflow(uri: str | None) -> None:
    """--mlflow needs MLflow and Optuna's integration package (the [mlflow] extra)."""
    if uri is None:
        return
    missing = [package for module, package in (("mlflow", "mlflow"),
                                               ("optuna_integration", "optuna-integration"))
               if module not in sys.modules and importlib.util.find_spec(module) is None]
    if missing:
        raise GsearchError(f"--mlflow needs {' and '.join(missing)}, not installed here; "
                           "pip install 'gsearch[mlflow]'")
    if not uri.strip():
        raise GsearchError("--mlflow needs a tracking URI, e.g. --mlflow sqlite:///mlflow.db or "
                           "--mlflow http://127.0.0.1:5000")


@dataclass(frozen=True)
class RunRequest:
    """`gsearch run`: search a study, or add `trials` finished trials to it (None: as many as
    `timeout` allows). `storage` None: a study in this process's memory (the Python API's
    default; no worker processes)."""

    trials: int | None = 200
    data: Path | None = None            # None: data.load.resolve_data's default
    label: str = LABEL_COLUMN
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()   # columns read as categories (text ones are anyway)
    sep: str | None = None              # the column separator (None: sniffed)
    max_data_mb: float | None = None    # the most MB of CSV read (None: data.files.max_data_mb)
    missing: str | None = None          # words read as an empty cell, a comma list (None: the
                                        # default words, data.columns.MISSING; "": none)
    task: str = "auto"                  # classification, regression or auto (data.columns.task_of)
    metric: str | None = None           # models.validation.METRICS; None: the task's default
    protocol: Protocol = Protocol()
    storage: str | None = DEFAULT_STORAGE
    study: str = DEFAULT_STUDY
    sampler: str = "tpe"
    pruner: str = DEFAULT_PRUNER
    seed: int | None = None             # the sampler's; training seeds are (seed or 0) + trial
    fix: tuple[str, ...] = ()           # NAME=VALUE
    ranges: tuple[str, ...] = ()        # NAME=LOW:HIGH, NAME=A,B,C (search.space.parse_ranges)
    space: str | Callable | None = None  # a space of one's own (search.space.resolve_space)
    device: str = "auto"
    threads: int = 1
    timeout: float | None = None        # seconds from the request's start
    export: Path | None = None          # export the best trials there after the search
    force: bool = False                 # the export may replace another study's (models.folder)
    ensemble: int | None = None         # the export's top K (None: selection.top_trials' default)
    level: float | None = 0.9           # the export's calibration and conformal level
    workers: int = 1
    heartbeat: int = 10
    storage_retry: float = 60.0
    population: int = DEFAULT_POPULATION
    warm_start: str | None = None
    warm_start_storage: str | None = None
    objectives: str = "accuracy"
    max_params: int | None = None
    max_latency_ms: float | None = None
    mlflow: str | None = None           # an MLflow tracking URI: every finished trial logged there
    progress: str = "auto"              # PROGRESS: auto, bar, off (search.progress.Progress)
    verbose: bool = False

    def __post_init__(self):
        _paths(self, "data", "export")

    def load(self):
        """The table this request names, read and checked (data.load: pandas, no torch), so
        that the CLI says what is wrong with it before it imports torch and Optuna."""
        from gsearch.data.load import load_dataset, resolve_data   # lazy: pandas

        ds = load_dataset(resolve_data(self.data), label=self.label, drop=self.drop,
                          group=self.protocol.group, categorical=self.categorical,
                          task=self.task, sep=self.sep, max_mb=self.max_data_mb,
                          missing=self.missing)
        if self.protocol.cv > 1:   # more --cv folds than the table allows (scikit-learn's split)
            self.protocol.train_rows(ds)
        return ds

    def check(self) -> None:
        _positive(trials=self.trials, workers=self.workers, population=self.population,
                  threads=self.threads, ensemble=self.ensemble, cv=self.protocol.cv)
        if self.trials is None and self.timeout is None:
            raise GsearchError("give --trials, --timeout or both: a run needs a count or a deadline")
        if self.progress not in PROGRESS:
            raise GsearchError(f"unknown progress {self.progress!r}; use {', '.join(PROGRESS)}")
        _check_task(self.task, self.metric)
        check_device(self.device)
        if self.data is not None:
            check_readable(self.data)
            check_size(self.data, self.max_data_mb)
            check_table(self.data, label=self.label, drop=self.drop, group=self.protocol.group,
                        categorical=self.categorical, sep=self.sep)
        if self.storage is None and self.workers > 1:
            raise GsearchError("worker processes share a study through a storage, not one in "
                               "memory; give --storage (e.g. sqlite:///studies.db) or one worker")
        if self.storage is not None:
            check_url(self.storage)
        check_study_name(self.study)
        if self.force and self.export is None:
            raise GsearchError("--force lets --export replace another study's export; give "
                               "--export DIR, or leave --force out")
        if self.export is not None:   # before the search: a folder problem never costs a search
            check_target(self.export, Owner(self.study, storage_identity(self.storage)),
                         force=self.force, option="--export")
        check_log_scale(self.fix, self.ranges)   # (the space sized to the table checks the rest)
        if self.ranges and self.space is not None:
            raise GsearchError("--range changes the built-in search space; a space of your own "
                               "(--space) sets its ranges itself: pass one of them")
        check_mlflow(self.mlflow)
        if self.warm_start:
            if (self.warm_start_storage or self.storage) is None:
                raise GsearchError("--warm-start reads a study from a storage; give "
                                   "--warm-start-storage")
            check_url(self.warm_start_storage or self.storage, must_exist=True)


@dataclass(frozen=True)
class ExportRequest:
    """`gsearch export-best`: retrain a study's best trials, test them, write a model folder."""

    study: str | None = None            # None: the storage's only study, else DEFAULT_STUDY
    storage: str = DEFAULT_STORAGE
    out: Path = Path("export")
    force: bool = False                 # --out may hold another study's export (models.folder)
    data: Path | None = None            # None: the file the study recorded
    ensemble: int | None = None         # None: selection.top_trials' default
    pick: str | None = None             # a selection.Pick rule, e.g. "smallest-within 0.01"
    pick_extra: tuple[str, ...] = ()    # the words after it on a command line ("0.01")
    trial: int | None = None
    level: float | None = 0.9           # calibration and conformal level (None: none)
    artifacts: Path | None = None       # None: beside a SQLite file
    device: str = "auto"
    threads: int = 1

    def __post_init__(self):
        _paths(self, "out", "data", "artifacts")

    def check(self) -> None:
        _positive(ensemble=self.ensemble, threads=self.threads)
        check_device(self.device)
        check_url(self.storage, must_exist=True)
        check_study_exists(self.storage, self.study)
        owner = None if self.study is None else Owner(self.study, storage_identity(self.storage))
        check_target(self.out, owner, force=self.force)   # export_best checks again, by the study
        if self.data is not None:
            check_readable(self.data)
        if self.pick is not None and self.trial is not None:
            raise GsearchError("--pick and --trial both choose the trial; pass one of them")


@dataclass(frozen=True)
class EvaluateRequest:
    """`gsearch evaluate`: per split seed (or published artist fold), search, export, test,
    next to tuned baselines."""

    split_seeds: tuple[int, ...] = (42, 0, 1)
    test_folds: tuple[int, ...] | None = None   # with protocol.groups "artist"
    trials: int = 40
    data: Path | None = None
    label: str = LABEL_COLUMN
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    sep: str | None = None
    max_data_mb: float | None = None
    missing: str | None = None
    task: str = "auto"
    metric: str | None = None
    protocol: Protocol = Protocol()
    storage: str | None = None          # None: search.evaluate.DEFAULT_EVAL_STORAGE
    out: Path = Path("evaluation")
    ensemble: int | None = None
    sampler: str = "tpe"
    pruner: str = DEFAULT_PRUNER
    seed: int = 0
    space: str | Callable | None = None
    device: str = "auto"
    threads: int = 1

    def __post_init__(self):
        _paths(self, "data", "out")

    def check(self) -> None:
        _positive(trials=self.trials, ensemble=self.ensemble, threads=self.threads)
        _check_task(self.task, self.metric)
        shown = ",".join(map(str, self.split_seeds))
        if not self.split_seeds or len(set(self.split_seeds)) != len(self.split_seeds):
            raise GsearchError(f"--split-seeds needs distinct integers, got {shown!r}; e.g. 42,0,1")
        if self.test_folds is not None:
            if self.protocol.groups != "artist":
                raise GsearchError("--test-folds picks GTZAN's published artist folds; add "
                                   "--groups artist, or use --split-seeds")
            check_test_folds(self.test_folds, ",".join(map(str, self.test_folds)))
        check_device(self.device)
        if self.data is not None:
            check_readable(self.data)
            check_size(self.data, self.max_data_mb)
        if self.storage is not None:
            check_url(self.storage)
