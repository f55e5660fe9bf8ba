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
import pandas as pd

from gsearch.data.header import DataError, show  # noqa: F401 (re-exported)
from gsearch.data.schema import REGRESSION_MIN_VALUES

# Cell values that mean "empty" (what a spreadsheet or pandas writes for a missing value),
# compared after stripping and lower-casing: in feature columns and in the label column.
# --missing WORDS replaces all but "" (a truly empty cell is always empty): missing_words.
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})


def missing_words(words: str | tuple[str, ...] | frozenset | None) -> frozenset:
    """The cell values that mean empty: MISSING when `words` is None, else the empty cell and
    `words` (a comma list, or words), stripped and lower-cased: --missing '' keeps only the
    empty cell, --missing NA,null those two besides it.

    >>> sorted(missing_words("NA, null")), sorted(missing_words(""))
    (['', 'na', 'null'], [''])
    """
    if words is None:
        return MISSING
    if isinstance(words, str):
        words = words.split(",")
    return frozenset({"", *(w.strip().lower() for w in words)})
# A text column whose distinct values are more than this share of its rows (and more than
# ID_MIN_VALUES) is an id or free text, not a category.
ID_SHARE, ID_MIN_VALUES = 0.5, 20
# The most distinct values a categorical feature may have.
MAX_CATEGORIES = 10_000
FLOAT32_MAX = float(np.finfo(np.float32).max)


def stripped(values) -> pd.Series:
    """Cell values as text without surrounding white space."""
    return pd.Series(values, dtype=object).str.strip()


def _distinct(values, missing: frozenset = MISSING) -> tuple[np.ndarray, pd.Series, np.ndarray]:
    """(each cell's index among the distinct cells, the distinct cells stripped, which of those
    mean empty): the text work done once per distinct value, not once per cell (a million
    cells of a few hundred values in a fraction of a second)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
    text = pd.Series(uniques, dtype=object).astype(str).str.strip()
    return codes, text, text.str.lower().isin(missing).to_numpy()


def is_missing(values, missing: frozenset = MISSING) -> np.ndarray:
    """Which cells are empty (`missing`: columns.MISSING by default, whatever their case)."""
    codes, _, empty = _distinct(values, missing)
    return empty[codes]


def clean_text(values, missing: frozenset = MISSING) -> np.ndarray:
    """Cells as stripped text, None where empty (an object array)."""
    codes, text, empty = _distinct(values, missing)
    return text.where(~empty, None).to_numpy(dtype=object)[codes]


def parse_numbers(values, missing: frozenset = MISSING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numbers as float64, NaN where a cell is empty or not a number; empty cells; cells that
    are not numbers). Numbers are parsed in C; only the cells that are not numbers are looked
    at as text."""
    parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    odd = np.flatnonzero(np.isnan(parsed))
    empty, text = np.zeros(len(parsed), bool), np.zeros(len(parsed), bool)
    if len(odd):
        values = np.asarray(values, dtype=object)
        gap = is_missing(values[odd], missing)
        empty[odd[gap]], text[odd[~gap]] = True, True
    return parsed, empty, text


def numbers(values: list[str], name: str, path, lines: list[int], *, gaps: bool = False,
            hint: str = "", rows: list[int] | None = None, parsed: tuple | None = None,
            bad_rows: dict | None = None, missing: frozenset = MISSING) -> np.ndarray:
    """A column as float64. `gaps`: empty cells become NaN (a table of one's own); without it
    an empty cell is refused (the Kaggle GTZAN schema, a length). Text, infinity and values
    beyond float32's range are refused, naming the row (`rows`: each value's data row in the
    file, when some rows were left out) and line; `hint` is added to the text refusal. With
    `bad_rows` (a dict), such a row is recorded there (index -> the refusal) and read as empty
    instead: the other rows go on (predict)."""
    def row(i: int) -> int:
        return i + 1 if rows is None else rows[i]

    def bad(i: int, what: str, extra: str = "") -> DataError:
        return DataError(f"{path}: column '{name}' has {what} {show(values[i])} at data row "
                         f"{row(i)} (line {lines[i]}); fix or drop that row{extra}")

    result, empty, text = parsed or parse_numbers(values, missing)   # `parsed`: parse_numbers' already
    result, empty, text = result.copy(), empty.copy(), text.copy()
    if not gaps and empty.any():   # a cell that means empty is a value that is not a number here
        odd = np.flatnonzero(empty)
        nan = stripped(np.asarray(values, dtype=object)[odd]).str.lower().to_numpy() == "nan"
        text[odd[~nan]] = True   # "nan" stays a number: NaN, refused below as not finite
        empty = np.zeros(len(values), bool)
    def refuse(i: int, error: DataError) -> None:
        if bad_rows is None:
            raise error
        bad_rows.setdefault(i, str(error))
        result[i] = np.nan

    for i in np.flatnonzero(text):
        what = "an empty value" if not str(values[i]).strip() else "a non-numeric value"
        refuse(i, bad(i, what, hint if what == "a non-numeric value" else ""))
    written = ~empty & ~text
    for i in np.flatnonzero(written & ~np.isfinite(result)):
        refuse(i, bad(int(i), "a NaN or infinite value"))
    with np.errstate(over="ignore"):
        too_big = np.flatnonzero(written & np.isfinite(result) & ~np.isfinite(result.astype(np.float32)))
    for i in too_big:
        refuse(i, DataError(f"{path}: column '{name}' has {show(values[i])} at data row {row(i)} "
                            f"(line {lines[i]}), beyond the float32 range (±{FLOAT32_MAX:.3g}); fix "
                            "or drop that row"))
    return result


def categories(values: list[str], name: str, path, lines: list[int], *,
               check: bool = True, drop: str | None = None,
               missing: frozenset = MISSING) -> tuple[np.ndarray, tuple[str, ...]]:
    """A categorical column: (codes as float32, NaN for an empty cell; its categories, sorted).
    `check`: refuse a column that is an id or free text (a different value in most rows) or
    that has more than MAX_CATEGORIES values, naming it and how to leave it out (`drop`, in
    words; by default --drop NAME)."""
    drop = drop or f"leave it out with --drop {name}"
    raw, text, empty = _distinct(values, missing)
    names = pd.Series(text[~empty].unique()).sort_values(ignore_index=True)   # sorted categories
    slot = pd.Series(np.arange(len(names)), index=names)
    lookup = np.where(empty, -1, slot.reindex(text).fillna(-1).to_numpy(np.int64))
    codes = lookup[raw]
    vocabulary = names.to_numpy(dtype=object)
    n, kept = len(vocabulary), int((codes >= 0).sum())
    if check and n > max(ID_MIN_VALUES, ID_SHARE * kept):
        raise DataError(f"{path}: column '{name}' has a different value in nearly every row ({n:,} "
                        f"values in {kept:,} rows): an id or free text, not a category; {drop}")
    if check and n > MAX_CATEGORIES:
        raise DataError(f"{path}: column '{name}' has {n:,} distinct values, more than the "
                        f"{MAX_CATEGORIES:,} a categorical feature may have; group its values into "
                        f"fewer, or {drop}")
    return np.where(codes >= 0, codes, np.nan).astype(np.float32), tuple(str(v) for v in vocabulary)


def task_of(labels: list[str], task: str, missing: frozenset = MISSING) -> str:
    """--task auto: regression for a label of numbers with more than REGRESSION_MIN_VALUES
    distinct values, else classification; the task asked for otherwise."""
    if task != "auto":
        return task
    parsed, _, text = parse_numbers(labels, missing)
    if text.any():
        return "classification"
    return "regression" if len(np.unique(parsed)) > REGRESSION_MIN_VALUES else "classification"
