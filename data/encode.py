"""A table's preprocessing, fitted on training rows: what a model does to raw feature rows
before its first layer. Numpy only; models.mlp.Preprocess does the same in torch inside every
exported model, so that predict and serve take the raw rows.

A model's raw input is one float per feature, in the table's feature order:
- a numeric feature: its value, NaN where the cell is empty;
- a categorical feature (text, or a column named with --categorical): the slot of its value in
  the encoding's `categories` of that feature (0 .. k-1), k for a value never seen in training
  (or too rare to keep: the "other" slot), NaN where the cell is empty.

`Encoding.encode` turns such rows into the matrix the network sees:
- a numeric feature: its value, an empty cell replaced by the training rows' median; and when
  the training rows had empty cells in it, a missing-indicator input (1 where it was empty);
- a categorical feature: one-hot over its k kept categories, "other" and "missing".

A table with numbers only and no empty cell (GTZAN's) encodes to itself: `Encoding.identity`.

>>> import numpy as np
>>> X = np.array([[1.0, 0], [np.nan, 1], [3.0, 0], [5.0, np.nan]], np.float32)
>>> enc = fit_encoding(X, ("size", "colour"), ("numeric", "categorical"), {"colour": ("blue", "red")})
>>> X = recode(enc, X, {"colour": ("blue", "red")})   # the dataset's codes -> the encoding's slots
>>> enc.categories, enc.medians, enc.width
(((), ('blue', 'red')), (3.0, None), 6)
>>> enc.encode(X)[1].tolist()   # size 3 (the median) and missing; colour red
[3.0, 1.0, 0.0, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gsearch.data.schema import CATEGORICAL, NUMERIC
from gsearch.data.schema import FEATURE_NAMES

if TYPE_CHECKING:   # data.load imports what this module does
    from gsearch.data.load import Dataset

# A categorical feature keeps at most this many of its most frequent training categories as
# one-hot inputs; rarer ones share the "other" slot with values never seen in training.
MAX_ONE_HOT = 64


@dataclass(frozen=True)
class Encoding:
    """The fitted preprocessing of a table's features (see the module). Per feature:
    `medians` (numeric: the training rows' median, None for a categorical one), `indicators`
    (numeric: whether a missing-indicator input follows it) and `categories` (categorical: the
    kept categories, most frequent first; () for a numeric one)."""

    features: tuple[str, ...]
    kinds: tuple[str, ...]
    medians: tuple[float | None, ...]
    indicators: tuple[bool, ...]
    categories: tuple[tuple[str, ...], ...]

    @classmethod
    def identity(cls, features: tuple[str, ...]) -> "Encoding":
        """Numbers only, no empty cell: the rows are the network's input as they are."""
        n = len(features)
        return cls(tuple(features), (NUMERIC,) * n, (None,) * n, (False,) * n, ((),) * n)

    @property
    def is_identity(self) -> bool:
        return all(k == NUMERIC for k in self.kinds) and not any(self.indicators) and \
            all(m is None for m in self.medians)

    @property
    def width(self) -> int:
        """Inputs of the network: one per numeric feature (two with an indicator), k + 2 per
        categorical feature."""
        return sum(len(c) + 2 if k == CATEGORICAL else 1 + i
                   for k, i, c in zip(self.kinds, self.indicators, self.categories))

    def encode(self, X: np.ndarray) -> np.ndarray:
        """Raw rows [N, n_features] (see the module) -> the network's inputs [N, width]."""
        if self.is_identity:
            return np.ascontiguousarray(X, dtype=np.float32)
        parts = []
        for j, (kind, median, indicator, cats) in enumerate(
                zip(self.kinds, self.medians, self.indicators, self.categories)):
            column = X[:, j].astype(np.float32)
            empty = np.isnan(column)
            if kind == NUMERIC:
                parts.append(np.where(empty, np.float32(median or 0.0), column)[:, None])
                if indicator:
                    parts.append(empty.astype(np.float32)[:, None])
                continue
            k = len(cats)
            slot = np.where(empty, k + 1, column)
            slot = np.where((slot < 0) | (slot > k + 1) | (slot != np.floor(slot)), k, slot)
            parts.append((slot[:, None] == np.arange(k + 2, dtype=np.float32)).astype(np.float32))
        return np.concatenate(parts, axis=1)

    def slots(self, j: int, values) -> np.ndarray:
        """The raw input of categorical feature `j` for text values: each value's slot, k
        for one never seen in training, NaN for None (empty)."""
        index = {c: i for i, c in enumerate(self.categories[j])}
        other = float(len(self.categories[j]))
        return np.array([np.nan if v is None else index.get(v, other) for v in values], np.float32)

    def to_json(self) -> dict:
        return {"kinds": list(self.kinds), "medians": list(self.medians),
                "indicators": list(self.indicators), "categories": [list(c) for c in self.categories]}

    @classmethod
    def from_json(cls, features: tuple[str, ...], data: dict) -> "Encoding":
        """The encoding model.json records (ValueError or TypeError when it is malformed)."""
        kinds, medians = tuple(data["kinds"]), tuple(data["medians"])
        indicators = tuple(data["indicators"])
        categories = tuple(tuple(c) for c in data["categories"])
        if not all(len(part) == len(features) for part in (kinds, medians, indicators, categories)):
            raise ValueError("preprocessing does not describe every feature once")
        for kind, median, indicator, cats in zip(kinds, medians, indicators, categories):
            if kind == NUMERIC and (median is not None and not isinstance(median, (int, float))
                                    or not isinstance(indicator, bool) or cats):
                raise ValueError("a numeric feature's preprocessing is malformed")
            if kind == CATEGORICAL and (median is not None or indicator
                                        or not all(isinstance(c, str) for c in cats)
                                        or len(set(cats)) != len(cats)):
                raise ValueError("a categorical feature's preprocessing is malformed")
            if kind not in (NUMERIC, CATEGORICAL):
                raise ValueError(f"unknown feature kind {str(kind)[:40]!r}")
        return cls(tuple(features), kinds, medians, indicators, categories)


def fit_encoding(X: np.ndarray, features: tuple[str, ...], kinds: tuple[str, ...],
                 vocabulary: dict[str, tuple[str, ...]], rows: np.ndarray | None = None, *,
                 impute: bool = True) -> Encoding:
    """The encoding of the training rows `rows` of X (all rows by default): X holds raw rows
    whose categorical columns are codes into `vocabulary[feature]` (a dataset's categories);
    `recode` then maps those codes to the encoding's slots. `impute`: record each numeric
    feature's median even where the training rows have no empty cell, so that a model takes
    empty cells at predict time; without it (the Kaggle GTZAN schema, where a feature is never
    empty) a table of numbers without gaps gets the identity."""
    if not impute and all(k == NUMERIC for k in kinds) and not np.isnan(X).any():
        return Encoding.identity(features)
    part = X if rows is None else X[rows]
    medians, indicators, categories = [], [], []
    for j, (name, kind) in enumerate(zip(features, kinds)):
        column = part[:, j]
        empty = np.isnan(column)
        if kind == NUMERIC:
            seen = column[~empty]
            medians.append(float(np.median(seen)) if len(seen) else 0.0)
            indicators.append(bool(empty.any()))
            categories.append(())
            continue
        codes = column[~empty].astype(np.int64)
        counts = np.bincount(codes, minlength=len(vocabulary[name]))
        order = np.argsort(-counts, kind="stable")[:MAX_ONE_HOT]
        kept = [vocabulary[name][c] for c in order if counts[c] > 0]
        medians.append(None)
        indicators.append(False)
        categories.append(tuple(kept))
    return Encoding(tuple(features), tuple(kinds), tuple(medians), tuple(indicators), tuple(categories))


def recode(encoding: Encoding, X: np.ndarray, vocabulary: dict[str, tuple[str, ...]]) -> np.ndarray:
    """Rows whose categorical columns are codes into a dataset's `vocabulary` -> the encoding's
    raw input (codes into its kept categories; k for the others)."""
    if all(k == NUMERIC for k in encoding.kinds):
        return X
    out = X.copy()
    for j, (name, kind) in enumerate(zip(encoding.features, encoding.kinds)):
        if kind != CATEGORICAL:
            continue
        slot = {c: i for i, c in enumerate(encoding.categories[j])}
        other = len(encoding.categories[j])
        lookup = np.array([slot.get(c, other) for c in vocabulary[name]] or [other], np.float32)
        column = X[:, j]
        empty = np.isnan(column)
        out[:, j] = np.where(empty, np.nan, lookup[np.where(empty, 0, column).astype(np.int64)])
    return out


def encoding_of(ds: Dataset, rows: np.ndarray) -> Encoding:
    """The encoding of a dataset fitted on its rows `rows` (a split's training rows): medians
    imputed in a table of one's own, the identity for the Kaggle GTZAN schema's numbers."""
    return fit_encoding(ds.X, ds.features, ds.kinds or (NUMERIC,) * len(ds.features), ds.vocabulary,
                        rows, impute=ds.features != FEATURE_NAMES)


def encoded(ds: Dataset, encoding: Encoding, rows: np.ndarray) -> np.ndarray:
    """The network's inputs for the dataset's rows `rows` under `encoding`."""
    return encoding.encode(recode(encoding, ds.X[rows], ds.vocabulary))
