"""A table held in memory (a pandas DataFrame, or a numpy array) as a Dataset, read as
`load_dataset` reads a CSV of one's own: a column is numeric when every cell that is not empty
is a number, else categorical (as is a pandas category column, and every column named in
`categorical`); empty cells (NaN, None, "", "NA", ...: columns.MISSING) are gaps the encoding
fills in. Every refusal is a DataError of one line naming the column and the row.

>>> import pandas as pd
>>> frame = pd.DataFrame({"size": [1.0, None, 3.0, 4.0], "colour": ["red", "", "blue", "red"],
...                       "kind": ["a", "b", "a", "b"]})
>>> ds = dataset_from_frame(frame, label="kind")
>>> ds.features, ds.kinds, ds.vocabulary, ds.classes, ds.y.tolist()
(('size', 'colour'), ('numeric', 'categorical'), {'colour': ('blue', 'red')}, ('a', 'b'), [0, 1, 0, 1])
>>> ds.X[1].tolist()   # an empty number and an empty category
[nan, nan]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Sequence

import numpy as np
import pandas as pd

from gsearch.data import columns as col
from gsearch.data.columns import DataError, show
from gsearch.data.load import Dataset, _classes
from gsearch.data.schema import CATEGORICAL, NUMERIC

FLOAT32_MAX = col.FLOAT32_MAX


def cell_text(value) -> str:
    """A cell as the text a CSV holds: 3 for 3.0 (so that numbers given for a categorical
    feature find the categories read from a file, and the ones read from a DataFrame)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _empty(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def column_kind(values, name: str, categorical: Sequence[str] = ()) -> str:
    """A column's kind as load_dataset decides a CSV's: categorical when named, when it is a
    pandas category column, or when a cell that is not empty is not a number."""
    if name in categorical or isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        return CATEGORICAL
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return NUMERIC
    if array.dtype.kind in "mM":
        raise DataError(f"column {show(name)} holds dates or durations; turn them into numbers "
                        "(e.g. seconds, or day of week as text) or leave the column out")
    if array.dtype.kind == "c":
        raise DataError(f"column {show(name)} holds complex numbers; split them into two columns")
    texts = [v if isinstance(v, str) else "" if _empty(v) else cell_text(v) for v in array]
    return CATEGORICAL if col.parse_numbers(texts)[2].any() else NUMERIC


def numbers_of(values, name: str, where: str = "X") -> np.ndarray:
    """A numeric column as float64 (NaN for an empty cell); text, infinity and values beyond
    float32's range are refused, naming the row (0-based position)."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        result = array.astype(np.float64)
        text = np.zeros(len(result), bool)
    else:
        texts = [v if isinstance(v, str) else "" if _empty(v) else cell_text(v) for v in array]
        result, _, text = col.parse_numbers(texts)
    if text.any():
        i = int(np.argmax(text))
        raise DataError(f"{where}: column {show(name)} has the text {show(str(array[i]))} at row "
                        f"{i}; the column is numeric (give a number, or leave the cell empty)")
    bad = np.flatnonzero(np.isinf(result) | (np.abs(np.nan_to_num(result)) > FLOAT32_MAX))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{where}: column {show(name)} has {array[i]!r} at row {i}, infinite or beyond "
                        f"the float32 range (±{FLOAT32_MAX:.3g}); fix or drop that row")
    return result


def texts_of(values) -> list[str | None]:
    """A categorical column's cells as stripped text, None where empty (columns.MISSING)."""
    texts = ["" if _empty(v) else (v if isinstance(v, str) else cell_text(v)).strip()
             for v in np.asarray(values, dtype=object)]
    empty = col.is_missing(np.asarray(texts, dtype=object)) if texts else []
    return [None if e else t for t, e in zip(texts, empty)]


def dataset_from_columns(columns: dict[str, object], y, *, task: str, label: str = "y",
                         classes: Sequence[str] | None = None, categorical: Sequence[str] = (),
                         groups=None, grouping: str | None = None,
                         source: str = "<DataFrame>") -> Dataset:
    """A Dataset from feature columns (name -> values, in order) and labels `y`: a
    classification's (text or numbers; `classes`, the labels as text in their order, else
    sorted as load_dataset sorts a CSV's) or a regression's numbers. `groups`: per row, the
    group it belongs to (`grouping` names it), else each row is its own group. `source` names
    the table in messages and in the study (its `data_path`); its fingerprint (`sha256`) is
    the digest of what was read, so a study refuses other rows as it refuses another file."""
    names = list(columns)
    n = len(y)
    if not names:
        raise DataError(f"{source} has no feature column; a table needs at least one")
    if n == 0:
        raise DataError(f"{source} has no rows")
    X = np.empty((n, len(names)), np.float32)
    kinds, vocabulary = [], {}
    for j, name in enumerate(names):
        values = columns[name]
        if len(values) != n:
            raise DataError(f"{source}: column {show(name)} has {len(values)} rows, the labels {n}")
        kind = column_kind(values, name, categorical)
        kinds.append(kind)
        if kind == NUMERIC:
            X[:, j] = numbers_of(values, name, source)
        else:
            X[:, j], vocabulary[name] = col.categories(
                ["" if t is None else t for t in texts_of(values)], name, source, [],
                drop=f"leave column {show(name)} out of {source}")
    labels = np.asarray(y, dtype=object)
    if task == "regression":
        target = numbers_of(y, label, "y")
        if np.isnan(target).any():
            raise DataError(f"y has an empty value at row {int(np.argmax(np.isnan(target)))}; "
                            "give every row a number")
        target, classes = target.astype(np.float32), ()
    else:
        texts = pd.Series([None if _empty(v) else cell_text(v).strip() for v in labels], dtype=object)
        missing = np.flatnonzero(texts.isna().to_numpy() | col.is_missing(texts.fillna("").to_numpy()))
        if len(missing):
            raise DataError(f"y has an empty label at row {int(missing[0])}; give every row a label")
        target, classes = _classes(texts, None if classes is None else tuple(classes), source, label, None)
    rows = np.char.add("row", np.arange(n).astype(str)).astype(object)
    group_values = rows if groups is None else np.asarray([cell_text(g) for g in groups], dtype=object)
    if len(group_values) != n:
        raise DataError(f"groups has {len(group_values)} values, the labels {n}")
    digest = hashlib.sha256(json.dumps([names, kinds, {k: list(v) for k, v in vocabulary.items()},
                                        list(classes), label]).encode())
    for part in (X, np.asarray(target), group_values.astype(str) if groups is not None else None):
        if part is not None:
            digest.update(np.ascontiguousarray(part).tobytes())
    return Dataset(X=X, y=target, classes=tuple(classes), groups=group_values, tracks=rows,
                   filenames=rows.astype(str), sha256=digest.hexdigest(), path=source,
                   features=tuple(names), label=label,
                   grouping=(grouping or "groups") if groups is not None else "track",
                   kinds=tuple(kinds), vocabulary=vocabulary, task=task)


def dataset_from_frame(frame: pd.DataFrame, label: str = "label", *, drop: Sequence[str] = (),
                       categorical: Sequence[str] = (), group: str | None = None,
                       task: str = "auto") -> Dataset:
    """A DataFrame as `gsearch run --data` reads a CSV of one's own: the features are every
    column but `label`, `group` and the `drop`ped ones; `task` auto is a regression for a label
    of numbers with more than REGRESSION_MIN_VALUES distinct values; a row without a label is
    left out (counted in `unlabelled`); `group` names the column that keeps rows together in
    every split (an artist, a session, a patient)."""
    names = [str(c) for c in frame.columns]
    for what, wanted in (("label", [label]), ("drop", list(drop)), ("group", [group] if group else [])):
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DataError(f"the DataFrame has no column {show(missing[0])} ({what}); its "
                            f"columns: {', '.join(names[:8])}" + (" ..." if len(names) > 8 else ""))
    if label == group:
        raise DataError(f"column {show(label)} cannot be both the label and the group")
    frame = frame.set_axis(names, axis=1)
    labelled = ~col.is_missing(np.asarray([None if _empty(v) else cell_text(v) for v in frame[label]],
                                          dtype=object))
    if not labelled.any():
        raise DataError(f"column {show(label)} has no label in any row")
    kept = frame[labelled]
    texts = [cell_text(v).strip() for v in kept[label]]
    task = col.task_of(texts, task)
    features = {name: kept[name].to_numpy() if not isinstance(kept[name].dtype, pd.CategoricalDtype)
                else kept[name] for name in names if name not in {label, group, *drop}}
    ds = dataset_from_columns(features, texts, task=task, label=label, categorical=categorical,
                              groups=None if group is None else kept[group].to_numpy(),
                              grouping=group)
    return ds if labelled.all() else replace(ds, unlabelled=int((~labelled).sum()))
