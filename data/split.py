"""Train / validation / test splits that keep every group (a track, or an artist) on one side,
and the scaler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from gsearch.data.load import DataError, Dataset


@dataclass(frozen=True)
class Split:
    """Row indices into a Dataset. `test` is never seen by the search."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def train_val(self) -> np.ndarray:
        return np.sort(np.concatenate([self.train, self.val]))


# A regression is stratified by the quantile bin of its target (at most this many bins)
REGRESSION_BINS = 5


def strata(ds: Dataset) -> np.ndarray:
    """What each row is stratified by: its class, or a regression's target binned by quantile
    (so that every split spans the target's range)."""
    if ds.task != "regression":
        return ds.y
    bins = max(1, min(REGRESSION_BINS, len(np.unique(ds.groups)) // 10))
    edges = np.quantile(ds.y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, ds.y, side="right").astype(np.int64)


def unit(ds: Dataset) -> str:
    """What a group is, in a message: a track (GTZAN's schema), a row (a table of one's own
    without --group), an artist, or the --group column's value."""
    from gsearch.data.schema import FEATURE_NAMES   # light: a tuple of names

    if ds.grouping == "track" and ds.features != FEATURE_NAMES:
        return "row"
    return ds.grouping


def _track_labels(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The groups and the label each is stratified by: a track's rows must share one label;
    a group of another kind (an artist, a --group column's value) may mix labels, and is
    stratified by its most common one."""
    y = strata(ds)
    tracks, first, inverse = np.unique(ds.groups, return_index=True, return_inverse=True)
    labels = y[first]
    mixed = np.flatnonzero(labels[inverse] != y)
    if not len(mixed):
        return tracks, labels
    if ds.grouping == "track" and ds.task != "regression":
        raise DataError(f"track {ds.groups[mixed[0]]!r} has rows with different labels; "
                        "every row of a track must carry the same label")
    counts = np.zeros((len(tracks), int(y.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, y), 1)
    return tracks, counts.argmax(axis=1)


def _split_tracks(tracks, labels, size: float, seed: int, what: str, unit: str = "track",
                  classes: tuple[str, ...] | None = None, regression: bool = False):
    n_classes = len(np.unique(labels))
    n_hold = int(np.ceil(size * len(tracks)))
    if n_hold < n_classes or len(tracks) - n_hold < n_classes:
        over = f"{n_classes} ranges of the target" if regression else f"{n_classes} classes"
        raise DataError(
            f"too few {unit}s ({len(tracks)}) for a stratified {what} split of {size:.0%} "
            f"over {over}; use a larger file or change --{what}-size")
    values, counts = np.unique(labels, return_counts=True)
    if regression and counts.min() < 2:   # a bin of one: split without strata
        return train_test_split(tracks, test_size=size, random_state=seed)
    if counts.min() < 2:
        lone = values[counts.argmin()]
        name = repr(classes[lone]) if classes is not None else f"#{lone}"
        raise DataError(f"class {name} has a single {unit}; a stratified {what} split needs at "
                        f"least 2 {unit}s per class (and the test and validation splits together "
                        f"3): add {unit}s of it or leave it out")
    return train_test_split(tracks, test_size=size, stratify=labels, random_state=seed)


def _member(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """values in chosen, by hashing: np.isin compares object arrays (group names) pairwise,
    which took 17 minutes for a 100,000-row table."""
    return pd.Series(values).isin(chosen).to_numpy()


def split_dataset(ds: Dataset, *, test_size: float, val_size: float, seed: int,
                  test_fold: int | None = None) -> Split:
    """Stratified holdout of `test_size` of the groups (or, with `test_fold`, the rows of that
    fold of `ds.folds`), then `val_size` of the rest's groups for validation. Splits are made
    on groups (tracks, so 3-second segments never leak; or artists), so no group is on two
    sides. The defaults of a study are its protocol's (gsearch.search.Protocol().split(ds))."""
    for name, value in (("test", test_size), ("val", val_size)):
        if not 0 < value < 1:
            raise DataError(f"--{name}-size must be between 0 and 1, got {value}")
    tracks, labels = _track_labels(ds)
    named, regression = unit(ds), ds.task == "regression"
    if test_fold is None:
        rest, test = _split_tracks(tracks, labels, test_size, seed, "test", named, ds.classes, regression)
    else:
        if ds.folds is None:
            raise DataError("--test-fold needs a table with published folds (--groups artist)")
        in_fold = _member(tracks, ds.groups[ds.folds == test_fold])
        if not in_fold.any():
            raise DataError(f"no row is in fold {test_fold}; the folds are "
                            f"{', '.join(map(str, sorted(set(ds.folds.tolist()))))}")
        test, rest = tracks[in_fold], tracks[~in_fold]
    rest_labels = labels[np.searchsorted(tracks, rest)]
    train, val = _split_tracks(rest, rest_labels, val_size, seed, "val", named, ds.classes, regression)

    def rows(chosen):
        return np.flatnonzero(_member(ds.groups, chosen))

    return Split(train=rows(train), val=rows(val), test=rows(test))


def kfold_splits(ds: Dataset, rows: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds of `rows` grouped by `ds.groups` (tracks or artists):
    [(train_rows, val_rows), ...]. More folds than `rows` allow (each needs a group, and
    the largest class must reach every fold) are refused in one line naming the most."""
    check_folds(ds, rows, k)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(rows[a], rows[b]) for a, b in folds.split(ds.X[rows], strata(ds)[rows], ds.groups[rows])]


def check_folds(ds: Dataset, rows: np.ndarray, k: int) -> None:
    """--cv k on `rows`: at most one fold per group, and no more than the largest class's
    rows (a regression: its largest target bin's), as StratifiedGroupKFold needs."""
    groups = len(np.unique(ds.groups[rows]))
    largest = int(np.bincount(strata(ds)[rows]).max()) if len(rows) else 0
    most = min(groups, largest)
    if k <= most:
        return
    named = unit(ds)
    held = (f"{groups} {named}s (each {named} stays in one fold)" if named in ("row", "track", "artist")
            else f"{groups} values of column {named!r} (each stays in one fold)")
    why = (held if groups == most else
           f"{largest} rows in their largest "
           f"{'target bin' if ds.task == 'regression' else 'class'} (every fold needs one)")
    fix = f"pass --cv {most} or fewer" if most >= 2 else "pass --cv 1 (the validation split)"
    raise DataError(f"--cv {k}: the {len(rows)} training and validation rows allow at most "
                    f"{most} folds, having {why}; {fix}")


def fit_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per feature (constant features get std 1)."""
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    std[std < 1e-12] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
