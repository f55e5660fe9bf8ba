"""`gsearch.load`: a fitted estimator from an export folder, without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gsearch.api._estimators import (ESTIMATOR_FILE, _EXPORT_FILES, MLPSearchClassifier,
                                     MLPSearchRegressor, _MLPSearch, _python_errors)
from gsearch.api._fitted import cell_text_of


def load(path, *, backend: str = "onnx") -> _MLPSearch:
    """A fitted estimator from an export folder: one `save` wrote, or one `gsearch run --export`
    or `gsearch export-best` wrote (a classifier's classes_ are then its class names as text).
    Only the model is loaded (weights only, checked against model.json's digests): no pickle.

    >>> import gsearch, tempfile
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = gsearch.MLPSearchClassifier(n_trials=2, space={"epochs": 5}, random_state=0).fit(X, y)
    >>> folder = clf.save(tempfile.mkdtemp() + "/iris")
    >>> again = gsearch.load(folder)
    >>> bool((again.predict(X) == clf.predict(X)).all()), again.classes_
    (True, array([0, 1, 2]))
    """
    from gsearch.models.predict import ExportedModel   # lazy: the model's floor

    path = Path(path)
    with _python_errors():
        model = ExportedModel(path, backend)
        files = {name: (path / name).read_bytes() for name in _EXPORT_FILES if (path / name).is_file()}
    record = json.loads(files.get(ESTIMATOR_FILE, b"{}") or b"{}")
    cls = MLPSearchRegressor if model.regression else MLPSearchClassifier
    known = cls().get_params()
    estimator = cls(**{k: v for k, v in record.get("params", {}).items() if k in known})
    names = record.get("feature_names_in", list(model.features)) if record else list(model.features)
    if names is not None:
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    estimator.n_features_in_ = len(model.features)
    if not model.regression:   # the labels as given where estimator.json records them
        classes = record.get("classes")
        same = classes is not None and [cell_text_of(c) for c in classes] == list(model.classes)
        estimator.classes_ = (np.asarray(classes, dtype=np.dtype(record["classes_dtype"])) if same
                              else np.asarray(model.classes, dtype=object))
    estimator._export = files
    estimator.model_ = model
    estimator.manifest_ = model.manifest
    estimator.study_ = None
    estimator.test_scores_ = dict(model.manifest.test_scores or {})
    return estimator
