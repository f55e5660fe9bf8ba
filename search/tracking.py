"""Tracking where teams already look: every finished trial of a run logged to MLflow
(`gsearch run --mlflow URI`, the estimators' `mlflow_uri=`), through Optuna's integration
package (optuna_integration.MLflowCallback; the [mlflow] extra).

One MLflow run per finished trial, in the experiment named after the study: the trial's
parameters, its objective values (a pruned trial has none: its state is a tag) and tags for
its number, state and the study's direction. The callback runs in the process that runs the
search (with --workers, the parent, from what its workers report), as Optuna's callbacks do.
"""

from __future__ import annotations

import contextlib
import os
import warnings

from gsearch import GsearchError
from gsearch.search.loop import Callback
from gsearch.search.objectives import Objectives
from gsearch.search.storage import safe_url
from gsearch.search.storage.url import first_line

# The probe of a tracking server: one try of at most this many seconds (MLflow's own requests
# retry 7 times over minutes), so that a server that is down is said at once
PROBE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# MLflow 3 refuses its file store (a folder such as ./mlruns) unless this is set; a --mlflow
# that names a folder asks for that store, so gsearch allows it for this process
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


def is_file_store(uri: str) -> bool:
    """A folder (file:///path, or a plain path), not a database, server or Databricks URI."""
    return uri.startswith("file:") or "://" not in uri and not uri.startswith("databricks")


def mlflow_callback(uri: str, objectives: Objectives) -> Callback:
    """An Optuna callback logging each finished trial to the MLflow tracking server or store at
    `uri`, with the objectives' names as metric names; the store is reached here, so a bad URI
    is one GsearchError before any trial runs."""
    if is_file_store(uri):
        os.environ.setdefault(FILE_STORE_ENV, "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # MLflow's and Optuna's notes on experimental features
        import mlflow   # lazy: the [mlflow] extra, about a second to import
        from optuna_integration.mlflow import MLflowCallback   # lazy: as above

        try:
            with _quick_requests():
                mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as e:   # any store error: a bad URI, a server down, a refused store
            raise GsearchError(f"cannot reach MLflow at {safe_url(uri)}: {first_line(e)[:300]}; "
                               "check --mlflow (e.g. sqlite:///mlflow.db, http://HOST:5000 or "
                               "a folder ./mlruns)") from None
        names = [objectives.title(n).replace(" ", "_") for n in objectives.names]
        return MLflowCallback(tracking_uri=uri, metric_name=names if len(names) > 1 else names[0],
                              create_experiment=True)


@contextlib.contextmanager
def _quick_requests():
    """MLflow's HTTP requests meanwhile: PROBE's (its settings are read per request)."""
    before = {name: os.environ.get(name) for name in PROBE}
    os.environ.update(PROBE)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
