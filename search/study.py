"""Storages, studies and the guard that ties a study to one data file and split."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from gsearch import GsearchError
from gsearch.data.load import Dataset

DEFAULT_STORAGE = "sqlite:///studies.db"
DEFAULT_STUDY = "gtzan-mlp"
# Trials trained at once as one batched model (gsearch run --population); measured in
# bench/bench_speed.py and the README's performance section.
DEFAULT_POPULATION = 4
OBJECTIVE_NAME = "validation accuracy"
# Study user attributes that must match between runs and exports of one study.
GUARDED = ("data_sha256", "split_seed", "test_size", "val_size")


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def open_storage(url: str, *, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage for a SQLAlchemy URL (sqlite://, postgresql://, mysql://)."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise GsearchError(f"bad storage URL {safe_url(url)!r}; use for example "
                           f"{DEFAULT_STORAGE} or postgresql://user@host/dbname") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise GsearchError("an in-memory SQLite storage keeps nothing; give a file, "
                               f"for example {DEFAULT_STORAGE}")
        path = Path(database)
        if not path.parent.is_dir():
            raise GsearchError(f"folder {path.parent} for storage {url} does not exist; create it "
                               "or choose another path")
        if must_exist and not path.is_file():
            raise GsearchError(f"no study storage at {path}; run 'gsearch run' first or pass "
                               "--storage")
    try:
        return optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as e:
        raise GsearchError(f"cannot open storage {safe_url(url)}: "
                           f"{safe_url(_first_line(e))}") from None


def fingerprint(ds: Dataset, *, split_seed: int, test_size: float, val_size: float) -> dict:
    """What a study records about its data; see GUARDED for what must match."""
    return {"data_sha256": ds.sha256, "data_path": ds.path, "n_rows": int(len(ds.y)),
            "classes": list(ds.classes), "split_seed": split_seed,
            "test_size": test_size, "val_size": val_size}


def check_fingerprint(study: optuna.Study, expected: dict) -> None:
    recorded = study.user_attrs
    for key in GUARDED:
        if key in recorded and recorded[key] != expected[key]:
            raise GsearchError(
                f"study '{study.study_name}' was made with {key}={recorded[key]!r} "
                f"(data {recorded.get('data_path')}), this run has {key}={expected[key]!r}; "
                "use the same data and split options, or a new --study name")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(storage: optuna.storages.BaseStorage, name: str, **kwargs) -> optuna.Study:
    """Load an existing study or fail with the names that do exist."""
    if name not in study_names(storage):
        names = ", ".join(study_names(storage)) or "none"
        raise GsearchError(f"no study named '{name}' in this storage (studies: {names}); "
                           "pass --study")
    return optuna.load_study(study_name=name, storage=storage, **kwargs)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # constant_liar: trials asked while others run (populations, workers) avoid
        # the configurations still in flight.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise GsearchError(f"unknown sampler {name!r}; use tpe or random")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=10, max_resource=200, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise GsearchError(f"unknown pruner {name!r}; use median, hyperband or none")


def open_study(storage: optuna.storages.BaseStorage, name: str, *, data: dict,
               sampler: str, pruner: str, seed: int | None) -> optuna.Study:
    """Create the study, or resume it after checking it was made on the same data.

    A seeded sampler is re-seeded with seed + trials so far, so a resumed study
    continues the sequence instead of replaying its first configurations.
    """
    done = 0
    if name in study_names(storage):
        existing = optuna.load_study(study_name=name, storage=storage)
        check_fingerprint(existing, data)
        done = len(existing.trials)
    seed = None if seed is None else seed + done
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=make_sampler(sampler, seed), pruner=make_pruner(pruner),
                                load_if_exists=True)
    if done == 0:
        for key, value in data.items():
            study.set_user_attr(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])
    return study


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts
