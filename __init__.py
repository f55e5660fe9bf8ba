"""gsearch: hyperparameter search for multilayer perceptrons on tables (GTZAN built in).

The public API (docs/python.md), each name imported on first use, so that `import gsearch`
loads neither torch, Optuna nor pandas:

- scikit-learn estimators: MLPSearchClassifier, MLPSearchRegressor; load(DIR), a fitted
  estimator from an export folder (one `save` or `gsearch run --export` wrote);
- the library the command line calls, one request per job: RunRequest -> run_study (gsearch
  run), ExportRequest -> export_study (gsearch export-best), EvaluateRequest -> evaluate
  (gsearch evaluate), with Protocol (the splits a study records);
- tables: dataset_from_frame (a DataFrame), load_dataset (a CSV);
- models: ExportedModel (an export folder: predict_proba, predict_values, ...), TrialConfig
  (what a search space of one's own returns);
- errors: GsearchError (a bad input; its message is one line), GsearchValueError (the
  estimators': also a ValueError), Interrupted (a Ctrl-C that stopped a job cleanly).

>>> import gsearch
>>> request = gsearch.RunRequest(trials=0)
>>> request.check()
Traceback (most recent call last):
gsearch.GsearchError: --trials must be at least 1, got 0

The package's floors are folders: ``gsearch.data`` (load, validate, split), ``gsearch.models``
(config, MLP, training, export, prediction), ``gsearch.search`` (the Optuna study: search,
export, evaluate), ``gsearch.serve`` (the HTTP model server), and on top ``gsearch.cli`` (the
command line) and ``gsearch.api`` (the estimators). This file is the repository root's
__init__.py; setup.cfg installs the root as the package gsearch.
"""

import importlib as _importlib

__version__ = "0.1.0"


class GsearchError(Exception):
    """A user-facing error: its message is one line that says what to do."""


class GsearchValueError(GsearchError, ValueError):
    """A bad input to the estimators (a parameter, X, y, a storage URL): a ValueError, as
    scikit-learn's users expect, with gsearch's one-line message."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that stopped a job cleanly; its message says what was kept and how
    to go on (e.g. which --trials finishes an interrupted run's count)."""


def _lazy_exports(package: str, exports: dict[str, str], public=()):
    """(__getattr__, __dir__) for a package that re-exports names from its modules on first
    use, so `import gsearch.models` costs nothing until a name is used (PEP 562); `public`:
    names the package defines itself, listed by dir() too."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(_importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted([*exports, *public])

    return __getattr__, __dir__


_EXPORTS = {
    "MLPSearchClassifier": "gsearch.api",
    "MLPSearchRegressor": "gsearch.api",
    "load": "gsearch.api",
    "RunRequest": "gsearch.search.requests",
    "ExportRequest": "gsearch.search.requests",
    "EvaluateRequest": "gsearch.search.requests",
    "Protocol": "gsearch.search.protocol",
    "run_study": "gsearch.search.runner",
    "export_study": "gsearch.search.export",
    "evaluate": "gsearch.search.evaluate",
    "dataset_from_frame": "gsearch.data.frame",
    "load_dataset": "gsearch.data.load",
    "ExportedModel": "gsearch.models.predict",
    "TrialConfig": "gsearch.models.config",
}
__all__ = sorted([*_EXPORTS, "GsearchError", "GsearchValueError", "Interrupted", "__version__"])
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, ("GsearchError", "GsearchValueError",
                                                           "Interrupted", "__version__"))
