"""Train / validation / test splits that keep every track on one side, and the scaler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def _track_labels(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    tracks, first = np.unique(ds.groups, return_index=True)
    labels = ds.y[first]
    _, inverse = np.unique(ds.groups, return_inverse=True)
    mixed = np.flatnonzero(labels[inverse] != ds.y)
    if len(mixed):
        raise DataError(f"track {ds.groups[mixed[0]]!r} has rows with different labels; "
                        "every segment of a track must carry the same genre")
    return tracks, labels


def _split_tracks(tracks, labels, size: float, seed: int, what: str):
    n_classes = len(np.unique(labels))
    n_hold = int(np.ceil(size * len(tracks)))
    if n_hold < n_classes or len(tracks) - n_hold < n_classes:
        raise DataError(
            f"too few tracks ({len(tracks)}) for a stratified {what} split of {size:.0%} "
            f"over {n_classes} classes; use a larger file or change --{what}-size")
    if np.bincount(np.unique(labels, return_inverse=True)[1]).min() < 2:
        raise DataError(f"some genre has a single track; a stratified {what} split needs "
                        "at least 2 tracks per genre")
    return train_test_split(tracks, test_size=size, stratify=labels, random_state=seed)


def split_dataset(ds: Dataset, *, test_size: float, val_size: float, seed: int) -> Split:
    """Stratified holdout of `test_size` of the tracks, then `val_size` of the rest
    for validation. Splits are made on tracks, so 3-second segments never leak. The
    defaults of a study are its protocol's (gsearch.search.Protocol().split(ds))."""
    for name, value in (("test", test_size), ("val", val_size)):
        if not 0 < value < 1:
            raise DataError(f"--{name}-size must be between 0 and 1, got {value}")
    tracks, labels = _track_labels(ds)
    rest, test = _split_tracks(tracks, labels, test_size, seed, "test")
    rest_labels = labels[np.searchsorted(tracks, rest)]
    train, val = _split_tracks(rest, rest_labels, val_size, seed, "val")

    def rows(chosen):
        return np.flatnonzero(np.isin(ds.groups, chosen))

    return Split(train=rows(train), val=rows(val), test=rows(test))


def kfold_splits(ds: Dataset, rows: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds of `rows` grouped by track: [(train_rows, val_rows), ...]."""
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(rows[a], rows[b]) for a, b in folds.split(ds.X[rows], ds.y[rows], ds.groups[rows])]


def fit_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per feature (constant features get std 1)."""
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    std[std < 1e-12] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
