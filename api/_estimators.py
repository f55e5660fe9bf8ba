"""MLPSearchClassifier and MLPSearchRegressor: scikit-learn estimators over `gsearch run
--export` (search.runner.run_study with search.requests.RunRequest).

`fit` reads X (a DataFrame with text columns and empty cells, or an array) as `gsearch run
--data` reads a CSV (data.frame), runs the same search (the space sized to the table, the trial
loop, the pruner, the protocol's splits, populations, the device) in a study in memory or in
`storage`, exports the best trials as `--export` does (retrained on train+validation, scored on
the test rows the search never saw, calibrated) and keeps that export folder, in memory: it is
what `predict` runs (onnxruntime), what `save` writes and what pickling carries. Nothing here
imports torch or Optuna until `fit` (or a model is loaded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (check_array, check_consistent_length, check_is_fitted,
                                      column_or_1d, validate_data)

from gsearch import GsearchError, GsearchValueError
from gsearch.models.folder import Owner, replacing
from gsearch.search.requests import RunRequest
from gsearch.search.space import CATEGORICAL_PARAMETERS
from gsearch.api._fitted import (global_state, in_memory, jsonable, model_of, quiet, trials_table,
                                  unimportable)

# The estimator's own record in an export folder: what scikit-learn needs beyond model.json
# (the labels as they were given, not as text; the parameters). gsearch predict and serve
# ignore it.
ESTIMATOR_FILE = "estimator.json"
# The export files an estimator carries (models.manifest's names; the plot is one of the two)
_EXPORT_FILES = ("model.json", "model.onnx", "model.pt", "report.json", "confusion_matrix.png",
                 "predicted_vs_actual.png", ESTIMATOR_FILE)
# The CLI's option names in a library message -> the estimator's parameters
_PARAMETERS = {"trials": "n_trials", "timeout": "timeout", "study": "study_name",
               "storage": "storage", "workers": "n_jobs", "device": "device", "space": "space",
               "range": "space", "fix": "space", "ensemble": "ensemble", "population": "population",
               "metric": "metric", "cv": "cv", "test-size": "test_size", "val-size": "val_size",
               "sampler": "sampler", "pruner": "pruner", "level": "level", "mlflow": "mlflow_uri",
               "seed": "random_state", "group": "groups", "drop": "a column of X",
               "force": "save(..., force=True)"}
DEFAULT_TRIALS = 200   # without n_trials nor timeout: gsearch run's --trials default
MIN_ROWS = 3           # a training, a validation and a test row at the least


def as_python(message: str) -> str:
    """A library message in the estimator's words: --trials -> n_trials, --study -> study_name."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: _PARAMETERS.get(m[1], m[0]), message)


@contextlib.contextmanager
def _python_errors():
    """A GsearchError (a bad input) as GsearchValueError, in the estimator's words, with no
    traceback from inside the library."""
    try:
        yield
    except GsearchValueError:
        raise
    except GsearchError as e:
        raise GsearchValueError(as_python(str(e))) from None


def _is_frame(X) -> bool:
    pandas = sys.modules.get("pandas")   # a DataFrame exists only once pandas is imported
    return pandas is not None and isinstance(X, pandas.DataFrame)


class _MLPSearch(BaseEstimator):
    """What both estimators share; see MLPSearchClassifier."""

    _task = "classification"

    def __init__(self, n_trials: int | None = None, timeout: float | None = None, *,
                 space=None, metric: str | None = None, ensemble: int | None = None, cv: int = 1,
                 test_size: float = 0.2, val_size: float = 0.2, storage: str | None = None,
                 study_name: str | None = None, sampler: str = "tpe", pruner: str = "asha",
                 population: int = 4, level: float | None = 0.9, random_state=None,
                 device: str = "auto", n_jobs: int | None = 1, mlflow_uri: str | None = None,
                 verbose: int = 0):
        self.n_trials = n_trials
        self.timeout = timeout
        self.space = space
        self.metric = metric
        self.ensemble = ensemble
        self.cv = cv
        self.test_size = test_size
        self.val_size = val_size
        self.storage = storage
        self.study_name = study_name
        self.sampler = sampler
        self.pruner = pruner
        self.population = population
        self.level = level
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs
        self.mlflow_uri = mlflow_uri
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True   # an empty cell is a gap the encoding fills in
        tags.input_tags.string = True      # text columns are categories (numbers are numbers)
        tags.non_deterministic = self.random_state is None or self.timeout is not None
        return tags

    # -- fit -------------------------------------------------------------------------------

    def fit(self, X, y, groups=None):
        """Search, export the best trials, keep the export. `groups`: per row, the group
        (a patient, a session, an artist) that every split keeps on one side."""
        started = time.monotonic()   # timeout counts from here, as gsearch run --timeout does
        columns = self._columns(X, reset=True)
        n = len(columns[0])
        if n < MIN_ROWS:
            raise GsearchValueError(f"X has n_samples={n}; a search needs at least {MIN_ROWS} rows "
                                    "(its training, validation and test rows)")
        labels = self._labels(y, n)
        if groups is not None:
            groups = column_or_1d(groups)
            check_consistent_length(labels, groups)
        with _python_errors(), tempfile.TemporaryDirectory(prefix="gsearch-fit-") as folder:
            from gsearch.data.frame import dataset_from_columns   # lazy: pandas

            ds = dataset_from_columns(dict(zip(self._feature_names(), columns)), labels,
                                      task=self._task, classes=self._class_texts(),
                                      groups=groups, grouping="groups", source=self._source(X))
            request = self._request(ds, groups is not None, Path(folder))
            request.check()   # in milliseconds, before torch and Optuna load
            self._fit_request(request, ds, started)
        return self

    def _request(self, ds, grouped: bool, folder: Path) -> RunRequest:
        """The RunRequest of this estimator's parameters: its export to `folder`/model, and
        without a storage, its study in memory (worker processes: in a file in `folder`)."""
        from gsearch.search.protocol import Protocol   # light, but only a fit needs it

        trials, timeout = self.n_trials, self.timeout
        for name in ("n_trials", "ensemble", "cv", "population"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise GsearchValueError(f"{name} must be an int, got {value!r}")
        if trials is None and timeout is None:
            trials = DEFAULT_TRIALS
        for name, value in (("test_size", self.test_size), ("val_size", self.val_size)):
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise GsearchValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.level is not None and not 0 < self.level < 1:
            raise GsearchValueError(f"level must be between 0 and 1 (or None), got {self.level!r}")
        if timeout is not None and not timeout > 0:
            raise GsearchValueError(f"timeout must be positive seconds (or None), got {timeout!r}")
        if self.verbose is None or int(self.verbose) < 0:
            raise GsearchValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        seed = self._seed()
        protocol = Protocol(test_size=self.test_size, val_size=self.val_size, cv=int(self.cv),
                            split_seed=42 if seed is None else seed,
                            group="groups" if grouped else None)
        space, ranges = self._space()
        verbose = int(self.verbose)
        workers = self._workers()
        storage = self.storage
        if storage is None and workers > 1:   # worker processes share a study in a file
            storage = f"sqlite:///{folder / 'study.db'}"
        return RunRequest(trials=None if trials is None else int(trials), timeout=timeout,
                          task=self._task, metric=self.metric,
                          protocol=protocol, storage=storage, export=folder / "model",
                          study=self.study_name or self._study_name(ds, protocol, ranges, space),
                          sampler=self.sampler, pruner=self.pruner, seed=seed,
                          ranges=ranges, space=space, device=self.device,
                          workers=workers, population=int(self.population),
                          ensemble=None if self.ensemble is None else int(self.ensemble), level=self.level, mlflow=self.mlflow_uri,
                          progress="off" if verbose == 0 else "bar", verbose=verbose >= 2)

    def _fit_request(self, request: RunRequest, ds, started: float) -> None:
        """Run the request, keep the export (its files, the model) and the study."""
        from gsearch.search.runner import run_study   # lazy: torch and Optuna

        with global_state():
            out = request.export
            echo = print if self.verbose and int(self.verbose) >= 2 else quiet
            outcome = run_study(request, echo=echo, started=started, ds=ds)
            if outcome.published is None:
                raise GsearchValueError(
                    f"no trial completed ({outcome.finished} finished, none complete), so there "
                    "is no model: give a longer timeout or more n_trials"
                    + (f" (study '{request.study}' keeps its trials)" if self.storage else ""))
            study = outcome.study
            if self.storage is None and request.storage is not None:   # n_jobs: back in memory
                study = in_memory(study)
            manifest = outcome.published.exported.manifest
            (out / ESTIMATOR_FILE).write_text(json.dumps(self._record(), indent=2) + "\n")
            self._set_fitted({name: (out / name).read_bytes() for name in _EXPORT_FILES
                              if (out / name).is_file()}, study=study)
            self.n_trials_ = outcome.finished
            self.test_scores_ = dict(manifest.test_scores or {})

    def _set_fitted(self, files: dict[str, bytes], study=None) -> None:
        """The fitted attributes of an export's files (and the study that made it)."""
        self._export = files
        self.model_ = model_of(files)
        self.manifest_ = self.model_.manifest
        self.study_ = study
        if study is not None:
            best = study.best_trials[0] if len(study.directions) > 1 else study.best_trial
            self.best_params_ = dict(best.params)
            self.best_score_ = best.values[0]
            self.cv_results_ = trials_table(study, self.manifest_)

    # -- reading X and y -------------------------------------------------------------------

    def _columns(self, X, *, reset: bool) -> list:
        """X's columns, by position, after scikit-learn's checks (names and counts at fit,
        the same names and counts later: one ValueError line otherwise)."""
        if not _is_frame(X):
            X = check_array(X, dtype=None, ensure_all_finite=False, estimator=self)
            validate_data(self, X, reset=reset, skip_check_array=True)
            return [X[:, j] for j in range(X.shape[1])]
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise GsearchValueError(f"X has shape {X.shape}; give at least one row and one column")
        names = [str(c) for c in X.columns]
        twice = [c for c, n in Counter(names).items() if n > 1]
        if twice:
            raise GsearchValueError(f"X has column {twice[0]!r} more than once; keep one of them")
        fitted = getattr(self, "feature_names_in_", None)
        if not reset and fitted is not None and names != list(fitted):
            missing = [c for c in fitted if c not in names]
            extra = [c for c in names if c not in set(fitted)]
            what = (f"missing {missing[:3]}" if missing else "") + (", " if missing and extra else "") + \
                (f"unexpected {extra[:3]}" if extra else "")
            raise GsearchValueError(
                f"X has other columns than at fit ({what or 'another order'}); give the "
                f"{len(fitted)} columns of feature_names_in_, in that order: X[est.feature_names_in_]")
        validate_data(self, X, reset=reset, skip_check_array=True)
        return [X.iloc[:, j] for j in range(X.shape[1])]

    def _feature_names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else [f"x{j}" for j in range(self.n_features_in_)]

    @staticmethod
    def _source(X) -> str:
        return "<DataFrame>" if _is_frame(X) else "<array>"

    def _labels(self, y, n: int):
        """y checked; a classifier's classes_ set (its labels as text go to the Dataset)."""
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n), y)
        y = check_array(y, ensure_2d=False, dtype="numeric", ensure_all_finite=True, input_name="y")
        return y

    def _class_texts(self):
        return None

    def _seed(self) -> int | None:
        state = self.random_state
        if state is None or isinstance(state, (int, np.integer)):
            return None if state is None else int(state)
        if isinstance(state, np.random.RandomState):
            return int(state.randint(np.iinfo(np.int32).max))
        raise GsearchValueError(f"random_state must be None, an int or a RandomState, got {state!r}")

    def _workers(self) -> int:
        jobs = 1 if self.n_jobs is None else self.n_jobs
        if not isinstance(jobs, (int, np.integer)) or jobs == 0:
            raise GsearchValueError(f"n_jobs must be a positive int, -1 (every core) or None, got {jobs!r}")
        return int(jobs) if jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + int(jobs))

    def _space(self) -> tuple[Any, tuple[str, ...]]:
        """(a space of one's own, --range items) of `space`: a function trial ->
        TrialConfig (or its MODULE:FUNCTION), or a dict of the built-in space's parameters:
        (low, high) ranges, lists of choices, single values (held there; recorded as data)."""
        space = self.space
        if space is None:
            return None, ()
        if callable(space) or isinstance(space, str):
            if self._workers() > 1 and not isinstance(space, str) and unimportable(space):
                raise GsearchValueError(
                    "n_jobs > 1 runs the space in worker processes, which import it by name: "
                    "define the space function at the top of a module (not in a notebook or a "
                    "lambda), or use n_jobs=1")
            return space, ()
        if not isinstance(space, dict):
            raise GsearchValueError(f"space must be a function trial -> TrialConfig, its "
                                    f"'MODULE:FUNCTION', or a dict of ranges; got {type(space).__name__}")
        ranges = []
        for name, value in space.items():
            if not isinstance(value, (list, tuple)):   # one value: a range of one
                value = (value,) if name in CATEGORICAL_PARAMETERS else (value, value)
            pair = len(value) == 2 and name not in CATEGORICAL_PARAMETERS
            ranges.append(f"{name}={value[0]!r}:{value[1]!r}" if pair
                          else f"{name}={','.join(str(v) for v in value)}")
        return None, tuple(ranges)

    def _study_name(self, ds, protocol, ranges, space) -> str:
        """A name that follows what the study guards (the data, the protocol, the metric, the
        space), so that a fit with a storage resumes the study of the same data and settings,
        and starts another for other data (another fold of a cross-validation)."""
        key = json.dumps([ds.sha256, repr(protocol), self.metric, list(ranges),
                          space if isinstance(space, str) or space is None
                          else f"{getattr(space, '__module__', '')}:{getattr(space, '__qualname__', '')}"])
        kind = "classifier" if self._task == "classification" else "regressor"
        return f"mlp-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def _record(self) -> dict:
        """estimator.json: the estimator, its labels as given, its JSON-able parameters."""
        params = {k: v for k, v in self.get_params().items()
                  if v is None or isinstance(v, (str, int, float, bool))
                  or k == "space" and isinstance(v, dict) and jsonable(v)}
        record = {"estimator": type(self).__name__, "params": params,
                  "feature_names_in": (None if getattr(self, "feature_names_in_", None) is None
                                       else [str(n) for n in self.feature_names_in_])}
        if hasattr(self, "classes_"):
            record |= {"classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str}
        return record

    # -- predicting ------------------------------------------------------------------------

    def _raw(self, X) -> np.ndarray:
        """X as the export's raw rows: numbers (NaN empty) and categories' slots."""
        check_is_fitted(self)
        columns = self._columns(X, reset=False)
        from gsearch.data.frame import numbers_of, texts_of   # lazy: pandas
        from gsearch.data.schema import NUMERIC

        model = self.model_
        with _python_errors():
            return model.matrix({name: numbers_of(values, name) if kind == NUMERIC else texts_of(values)
                                 for name, kind, values in zip(model.features, model.kinds, columns)})

    def save(self, path, *, force: bool = False) -> Path:
        """Write the export folder `gsearch run --export` writes (model.onnx, model.pt,
        model.json, report.json, the test plot) and estimator.json to `path`; `gsearch.load`,
        `gsearch predict --model` and `gsearch serve --model` read it. `path`: a new or empty
        folder, or an export of the same study (replaced; another study's only with `force`),
        written whole or not at all, as `gsearch export-best --out` writes (models.folder)."""
        check_is_fitted(self)
        path = Path(path)
        owner = Owner(self.manifest_.study, self.manifest_.storage)
        with _python_errors(), replacing(path, owner, force=force, option="path") as partial:
            for name, data in self._export.items():
                (partial / name).write_bytes(data)
        return path

    # -- pickling: the export's files travel, the onnxruntime session is made again ----------

    def __getstate__(self):
        state = dict(super().__getstate__())   # a copy: object's is the instance's own dict
        state.pop("model_", None)
        state.pop("manifest_", None)
        study = state.get("study_")
        if study is not None:
            state["study_"] = in_memory(study)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_export" in state:
            self.model_ = model_of(self._export)
            self.manifest_ = self.model_.manifest


class MLPSearchClassifier(ClassifierMixin, _MLPSearch):
    """A multilayer-perceptron classifier found by gsearch's search: `fit` runs `gsearch run
    --export` on (X, y) and keeps the exported model (the top-`ensemble` trials retrained and
    averaged, calibrated at `level`).

    X: a pandas DataFrame (text columns are categories, empty cells are filled in as the
    training rows say) or an array. Budget: `n_trials` finished trials and/or `timeout`
    seconds from the start of `fit` (neither: 200 trials; only a timeout: as many trials as
    fit in it). The rest are rare options, keyword-only:

    - space: the search space: None (the built-in, sized to the table), a dict of the built-in
      space's parameters ({"width": (16, 64)} a range, {"lr_schedule": ["cosine"]} choices,
      {"epochs": 30} held fixed; recorded in the study as data), or a function trial ->
      gsearch.TrialConfig (or its "MODULE:FUNCTION"; recorded by name).
    - metric: what the search maximizes (accuracy, balanced_accuracy, macro_f1, log_loss,
      roc_auc); ensemble: the top K trials averaged (None: 5, or all when fewer); cv: K-fold
      CV per trial (1: one validation split); test_size, val_size: the rows held out for the
      export's test scores (`test_scores_`) and for validation.
    - storage: None (a study in memory) or any URL gsearch run takes (sqlite:///studies.db,
      postgresql://..., a journal file ...), so that optuna-dashboard shows the study while it
      runs and a later fit on the same data resumes it; study_name: its name (None: one made
      from the data and the settings).
    - sampler, pruner, population: as gsearch run's --sampler, --pruner, --population;
      random_state: seeds the sampler, the training and the splits (None: split seed 42, the
      sampler unseeded); device: auto, cpu or cuda; n_jobs: worker processes (-1: one per
      core); mlflow_uri: log every trial to MLflow (the [mlflow] extra); verbose: 0 quiet, 1 a
      progress bar (a widget in a notebook), 2 also the run's lines and Optuna's log.

    Fitted: classes_, n_features_in_, feature_names_in_ (a DataFrame's columns), study_ (the
    Optuna study), best_params_, best_score_ (the best trial's validation score), cv_results_
    (one row per trial, a DataFrame), test_scores_ (the export on its held-out rows), model_
    (gsearch.ExportedModel), manifest_ (its model.json), n_trials_ (trials this fit finished).

    >>> from sklearn.datasets import load_iris
    >>> from gsearch import MLPSearchClassifier
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> clf = MLPSearchClassifier(n_trials=3, space={"epochs": 5, "n_layers": (1, 1)},
    ...                           random_state=0).fit(X, y)
    >>> clf.classes_, clf.predict(X.head(2)).tolist(), len(clf.cv_results_)
    (array([0, 1, 2]), [0, 0], 3)
    """

    _task = "classification"

    def _labels(self, y, n: int):
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n), y)
        empty = [i for i, v in enumerate(y) if v is None or isinstance(v, (float, np.floating)) and np.isnan(v)]
        if empty:
            raise GsearchValueError(f"y has an empty label at row {empty[0]}; give every row a label")
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise GsearchValueError(f"y has one class ({self.classes_[0]!r}); a classifier needs at "
                                    "least 2 classes")
        texts = self._class_texts()
        if len(set(texts)) < len(texts):
            raise GsearchValueError(f"y's classes {self.classes_.tolist()[:6]} read the same as text; "
                                    "give labels that differ as text")
        return np.asarray(texts, dtype=object)[index]

    def _class_texts(self):
        from gsearch.data.frame import cell_text   # lazy: pandas

        return [cell_text(c).strip() for c in self.classes_]

    def predict_proba(self, X) -> np.ndarray:
        """Per row, each class's calibrated probability, in the order of classes_."""
        raw = self._raw(X)
        with _python_errors():
            p = self.model_.predict_proba(raw).astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        p = self.predict_proba(X)
        return self.classes_[np.argmax(p, axis=1)]

    def predict_sets(self, X) -> list[np.ndarray]:
        """Per row, the conformal prediction set at `level` (the classes the model cannot rule
        out, most likely first), as labels of classes_."""
        raw = self._raw(X)
        with _python_errors():
            sets = self.model_.predict_sets(raw)
        index = {text: i for i, text in enumerate(self.model_.classes)}
        return [self.classes_[[index[c] for c in s]] for s in sets]


class MLPSearchRegressor(RegressorMixin, _MLPSearch):
    """A multilayer-perceptron regressor found by gsearch's search: as MLPSearchClassifier
    (the same parameters), for a numeric target; `metric` is rmse (the default), mae or r2,
    and `score` is R^2 as scikit-learn's regressors' is.

    >>> from sklearn.datasets import load_diabetes
    >>> from gsearch import MLPSearchRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = MLPSearchRegressor(n_trials=2, space={"epochs": 5}, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape, sorted(reg.test_scores_)
    ((3,), ['mae', 'r2', 'rmse'])
    """

    _task = "regression"

    def predict(self, X) -> np.ndarray:
        raw = self._raw(X)
        with _python_errors():
            return self.model_.predict_values(raw).astype(np.float64)

    def predict_interval(self, X) -> np.ndarray:
        """Per row, the conformal interval (low, high) at `level`: [n_samples, 2]."""
        raw = self._raw(X)
        with _python_errors():
            return self.model_.predict_intervals(raw).astype(np.float64)


__all__ = ["MLPSearchClassifier", "MLPSearchRegressor", "ESTIMATOR_FILE", "as_python"]
