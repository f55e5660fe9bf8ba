"""A table's header checked against what a command names, with the standard library only.

`check_header` is every check that needs only the column names: a column named twice, the
label column (--label), the columns to leave out (--drop), to group by (--group) and to read as
categories (--categorical), and the feature columns (a model's; the Kaggle GTZAN schema's 57;
else every other column). The loader runs it on the file it reads; `gsearch run` runs it on the
header line (data.files.header_names) before it imports torch and Optuna, so a wrong column is
answered in a fraction of a second. Every problem of the header is reported in one line.

>>> check_header(["a", "b", "label"], "t.csv")
('a', 'b')
>>> try:
...     check_header(["a", "b"], "t.csv", drop=("c", "d"))
... except DataError as e:
...     print(e)
t.csv has 2 problems: no columns 'c', 'd' to leave out (--drop); no 'label' column (name the label column with --label); its columns: 'a', 'b'
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gsearch import GsearchError
from gsearch.data.files import header_names
from gsearch.data.schema import FEATURE_NAMES, FILENAME_COLUMN, LABEL_COLUMN, LENGTH_COLUMN

EXPECTED = "expected the Kaggle GTZAN schema (filename,length,<57 features>,label)"


class DataError(GsearchError):
    """A table that cannot be read as gsearch reads tables: the one-line message says where
    and what to do."""


def show(value: str, limit: int = 40) -> str:
    """A value from the file, quoted on one line and cut to a readable length."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def columns(names: list[str], limit: int = 8) -> str:
    """Column names for a message: the first `limit`, and how many in all."""
    shown = ", ".join(show(n, 30) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _some(names: list[str]) -> str:
    return ("column " if len(names) == 1 else "columns ") + ", ".join(show(n) for n in names)


def check_header(names: list[str], path: str | Path, require_labels: bool = True, *,
                 label: str = LABEL_COLUMN, features: tuple[str, ...] | None = None,
                 drop: tuple[str, ...] = (), group: str | None = None,
                 categorical: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The feature columns of a table with header `names`, checked: `features` when given (a
    study's or a model's, by name; other columns are ignored); else the Kaggle GTZAN schema's
    57 when the table has most of them (and then every Kaggle check: all 57, no unexpected
    column); else every column but the label, `filename`, `length`, `drop` and `group` (a table
    of one's own). The problems of the names a command gave are raised together."""
    whole, short = [], []   # each problem as its own message, and as a part of one
    repeated = [name for name, n in Counter(names).items() if n > 1]
    if repeated:
        whole.append(f"{path} has {_some(repeated)} more than once; keep one of them")
        short.append(f"{_some(repeated)} more than once (keep one)")
    unknown = [c for c in drop if c not in names]
    if unknown:
        whole.append(f"{path} has no {_some(unknown)} to leave out (--drop); its columns: "
                     f"{columns(names)}")
        short.append(f"no {_some(unknown)} to leave out (--drop)")
    if group is not None and group not in names:
        whole.append(f"{path} has no column {show(group)} to group rows by (--group); its "
                     f"columns: {columns(names)}")
        short.append(f"no column {show(group)} to group rows by (--group)")
    if group is not None and group == label:
        whole.append(f"--group {group}: the label column cannot be the group column; name a "
                     "column that says which rows belong together (an artist, a session)")
        short.append("the label column as the group column (--group: name another)")
    if require_labels and label not in names:
        whole.append(f"{path} has no {show(label)} column (its columns: {columns(names)}); "
                     "training needs a label per row: name its column with --label")
        short.append(f"no {show(label)} column (name the label column with --label)")
    if len(whole) == 1:
        raise DataError(whole[0])
    if whole:
        raise DataError(f"{path} has {len(whole)} problems: {'; '.join(short)}; its columns: "
                        f"{columns(names)}")
    found = _features(names, path, label=label, features=features,
                      drop=(*drop, *([group] if group is not None else [])))
    unknown = [c for c in categorical if c not in found]
    if unknown:
        raise DataError(f"{path} has no feature {_some(unknown)} to read as categories "
                        f"(--categorical); its features: {columns(list(found))}")
    return found


def _features(names: list[str], path, *, label: str, features: tuple[str, ...] | None,
              drop: tuple[str, ...]) -> tuple[str, ...]:
    if features is not None:
        missing = [c for c in features if c not in names]
        if missing:
            raise DataError(f"{path} lacks {len(missing)} feature column(s) of the model, first: "
                            f"{missing[:3]}; give a table with the columns it was trained on")
        return tuple(features)
    kaggle = sum(c in names for c in FEATURE_NAMES) >= len(FEATURE_NAMES) / 2
    if kaggle and not set(drop) & set(FEATURE_NAMES):
        missing = [c for c in FEATURE_NAMES if c not in names]
        if missing:
            raise DataError(f"{path} lacks {len(missing)} feature column(s), first: {missing[:3]}; "
                            + EXPECTED)
        known = {FILENAME_COLUMN, LENGTH_COLUMN, label, *FEATURE_NAMES, *drop}
        extra = [show(c) for c in names if c not in known]
        if extra:
            raise DataError(f"{path} has unexpected column(s) [{', '.join(extra[:3])}]; remove them "
                            "or leave them out with --drop (expected filename,length,<57 features>,"
                            "label)")
        return FEATURE_NAMES
    own = tuple(c for c in names if c not in {label, FILENAME_COLUMN, LENGTH_COLUMN, *drop})
    if not own:
        raise DataError(f"{path} has no feature column besides {columns(names)}; a table needs "
                        "feature columns and a label column")
    return own


def check_table(path: str | Path, *, label: str = LABEL_COLUMN, drop: tuple[str, ...] = (),
                group: str | None = None, categorical: tuple[str, ...] = (),
                sep: str | None = None) -> None:
    """check_header on the header line of the file at `path` (nothing when it cannot be read:
    the loader says why)."""
    names = header_names(path, sep)
    if names:
        check_header(names, path, label=label, drop=drop, group=group, categorical=categorical)
