"""What a fitted estimator holds besides its parameters, and the helpers of its fit: the
model its export's files load (onnxruntime), its study (in memory, so that a pickle carries
it), cv_results_ (one row per trial), and the caller's global state kept as it was.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np


def cell_text_of(value) -> str:
    from gsearch.data.frame import cell_text   # lazy: pandas

    return cell_text(value).strip()


def model_of(files: dict[str, bytes]):
    """The ExportedModel (onnxruntime) of an export's files."""
    from gsearch.models.predict import ExportedModel   # lazy: the model's floor

    with tempfile.TemporaryDirectory(prefix="gsearch-model-") as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        return ExportedModel(folder, "onnx")   # reads what it needs now


def in_memory(study):
    """`study`, or a copy of it in memory (one in a database: a pickle carries no connection)."""
    import optuna   # lazy: a study exists only once a fit has imported it

    from gsearch.search._compat import study_storage   # lazy: Optuna, as above

    storage = study_storage(study)
    if isinstance(storage, optuna.storages.InMemoryStorage):
        return study
    memory = optuna.storages.InMemoryStorage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.copy_study(from_study_name=study.study_name, from_storage=storage, to_storage=memory)
    return optuna.load_study(study_name=study.study_name, storage=memory)


def trials_table(study, manifest):
    """cv_results_: one row per trial, as GridSearchCV's cv_results_ has one per candidate:
    its number, state, params (and param_NAME), mean_test_score (its validation score),
    rank_test_score (1: the best), mean_fit_time (seconds), in_export (a member of the model)."""
    import pandas as pd   # lazy: as above

    from gsearch.search.objectives import Objectives   # lazy: torch and Optuna, loaded by now

    maximize = Objectives.of(study).maximize
    members = {m.trial for m in manifest.members} or {manifest.trial_number}
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else np.nan
        rows.append({"trial": t.number, "state": t.state.name, "params": dict(t.params),
                     **{f"param_{k}": v for k, v in t.params.items()},
                     "mean_test_score": np.nan if t.values is None else t.values[0],
                     "mean_fit_time": duration, "epochs_run": t.user_attrs.get("epochs_run"),
                     "in_export": t.number in members})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    complete = table["state"] == "COMPLETE"
    ranks = table["mean_test_score"].where(complete).rank(method="min", ascending=not maximize)
    table.insert(3, "rank_test_score", ranks.fillna(complete.sum() + 1).astype(int))
    return table


def quiet(line: str) -> None:
    """An echo that says nothing (verbose < 2)."""


def unimportable(space) -> bool:
    """A function worker processes cannot import by name: a notebook's, a lambda, a nested one."""
    name = getattr(space, "__qualname__", type(space).__qualname__)
    return getattr(space, "__module__", "__main__") == "__main__" or "<" in name


def jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def global_state():
    """Torch's thread count and Optuna's log level as the caller had them (a run sets both)."""
    import optuna   # lazy: a fit imports them anyway
    import torch

    threads, level = torch.get_num_threads(), optuna.logging.get_verbosity()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(level)
