"""One column of a table read as what it is: numbers (empty cells as NaN), categories (text, or
numbers named with --categorical), or the label (classes, or numbers for a regression).

Every refusal is a DataError of one line that names the column and the first row at fault
(data row N counts from 1 below the header; line L is the file's line).

>>> numbers(["1", "", "2.5"], "x", "t.csv", [2, 3, 4], gaps=True).tolist()
[1.0, nan, 2.5]
>>> categories(["red", "", "blue", "red"], "c", "t.csv", [2, 3, 4, 5])
(array([ 1., nan,  0.,  1.], dtype=float32), ('blue', 'red'))
>>> task_of(["1.5", "2", "7"] * 10, "auto")
'classification'
"""

from __future__ import annotations

import numpy as np

from gsearch import GsearchError
from gsearch.data.schema import REGRESSION_MIN_VALUES

# Cell values that mean "empty" (what a spreadsheet or pandas writes for a missing value),
# compared after stripping and lower-casing: in feature columns and in the label column.
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})
# A text column whose distinct values are more than this share of its rows (and more than
# ID_MIN_VALUES) is an id or free text, not a category.
ID_SHARE, ID_MIN_VALUES = 0.5, 20
# The most distinct values a categorical feature may have.
MAX_CATEGORIES = 10_000
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DataError(GsearchError):
    """A table that cannot be read as gsearch reads tables: the one-line message says where
    and what to do."""


def show(value: str, limit: int = 40) -> str:
    """A value from the file, quoted on one line and cut to a readable length."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def is_missing(values: list[str]) -> np.ndarray:
    return np.fromiter((v.strip().lower() in MISSING for v in values), bool, len(values))


def numbers(values: list[str], name: str, path, lines: list[int], *, gaps: bool = False,
            hint: str = "", rows: list[int] | None = None) -> np.ndarray:
    """A column as float64. `gaps`: empty cells become NaN (a table of one's own); without it
    an empty cell is refused (the Kaggle GTZAN schema, a length). Text, infinity and values
    beyond float32's range are refused, naming the row (`rows`: each value's data row in the
    file, when some rows were left out) and line; `hint` is added to the text refusal."""
    def row(i: int) -> int:
        return i + 1 if rows is None else rows[i]

    def bad(i: int, what: str, extra: str = "") -> DataError:
        return DataError(f"{path}: column '{name}' has {what} {show(values[i])} at data row "
                         f"{row(i)} (line {lines[i]}); fix or drop that row{extra}")

    empty = is_missing(values) if gaps else np.zeros(len(values), bool)
    try:
        result = np.array(np.where(empty, "nan", values), dtype=str).astype(np.float64)
    except (ValueError, OverflowError):
        result = np.full(len(values), np.nan)
        for i, value in enumerate(values):
            if empty[i]:
                continue
            try:
                result[i] = float(value)
            except (ValueError, OverflowError):
                what = "an empty value" if not value.strip() else "a non-numeric value"
                raise bad(i, what, hint if what == "a non-numeric value" else "") from None
    written = ~empty
    nonfinite = np.flatnonzero(written & ~np.isfinite(result))
    if len(nonfinite):
        raise bad(int(nonfinite[0]), "a NaN or infinite value")
    with np.errstate(over="ignore"):
        too_big = np.flatnonzero(written & ~np.isfinite(result.astype(np.float32)))
    if len(too_big):
        i = int(too_big[0])
        raise DataError(f"{path}: column '{name}' has {show(values[i])} at data row {row(i)} (line "
                        f"{lines[i]}), beyond the float32 range (±{FLOAT32_MAX:.3g}); fix or "
                        "drop that row")
    return result


def parses_as_numbers(values: list[str]) -> bool:
    """Whether every value that is not empty is a number (then a column of one's own is numeric)."""
    try:
        np.array([v for v in values if v.strip().lower() not in MISSING], dtype=str).astype(np.float64)
    except (ValueError, OverflowError):
        return False
    return True


def categories(values: list[str], name: str, path, lines: list[int], *,
               check: bool = True) -> tuple[np.ndarray, tuple[str, ...]]:
    """A categorical column: (codes as float32, NaN for an empty cell; its categories, sorted).
    `check`: refuse a column that is an id or free text (a different value in most rows) or
    that has more than MAX_CATEGORIES values, naming it and --drop."""
    text = [v.strip() for v in values]
    empty = is_missing(text)
    kept = [t for t, e in zip(text, empty) if not e]
    vocabulary, codes = np.unique(np.array(kept, dtype=object), return_inverse=True)
    n = len(vocabulary)
    if check and n > max(ID_MIN_VALUES, ID_SHARE * len(kept)):
        raise DataError(f"{path}: column '{name}' has a different value in nearly every row ({n:,} "
                        f"values in {len(kept):,} rows): an id or free text, not a category; leave "
                        f"it out with --drop {name}")
    if check and n > MAX_CATEGORIES:
        raise DataError(f"{path}: column '{name}' has {n:,} distinct values, more than the "
                        f"{MAX_CATEGORIES:,} a categorical feature may have; group its values into "
                        f"fewer, or leave it out with --drop {name}")
    out = np.full(len(text), np.nan, np.float32)
    out[~empty] = codes
    return out, tuple(str(v) for v in vocabulary)


def task_of(labels: list[str], task: str) -> str:
    """--task auto: regression for a label of numbers with more than REGRESSION_MIN_VALUES
    distinct values, else classification; the task asked for otherwise."""
    if task != "auto":
        return task
    if not parses_as_numbers(labels):
        return "classification"
    return "regression" if len(set(float(v) for v in labels)) > REGRESSION_MIN_VALUES else "classification"
