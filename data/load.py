"""Read a GTZAN feature CSV and validate it at the boundary."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gsearch import GsearchError
from gsearch.data.schema import (
    FEATURE_NAMES, FILENAME_COLUMN, GENRES, LABEL_COLUMN, LENGTH_COLUMN, SEGMENT_MAX_SAMPLES,
)

DEFAULT_DATA = Path("data/gtzan/features_30_sec.csv")
GET_DATA_HINT = (
    "download the Kaggle dataset 'GTZAN Dataset - Music Genre Classification' "
    "(kaggle.com/datasets/andradaolteanu/gtzan-dataset-music-genre-classification), "
    f"unzip it and pass --data PATH/features_30_sec.csv (or put the file at {DEFAULT_DATA})"
)


class DataError(GsearchError):
    """The feature file is missing or does not follow the GTZAN schema."""


@dataclass(frozen=True)
class Dataset:
    """Validated feature rows: X float32 [N, 57], y int64 [N], track groups [N]."""

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    groups: np.ndarray
    filenames: np.ndarray
    sha256: str
    path: str
    clip_samples: int | None = None  # median row length in samples; None without a length column

    @property
    def n_tracks(self) -> int:
        return len(np.unique(self.groups))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def track_ids(filenames: pd.Series, lengths: pd.Series) -> np.ndarray:
    """The track each row belongs to: segments `blues.00000.3.wav` -> `blues.00000`.

    A file is a segment file when every row is at most SEGMENT_MAX_SAMPLES long;
    then the trailing `.K` of each stem is dropped. Whole-track rows are their own track.
    """
    stems = filenames.astype(str).map(lambda name: re.sub(r"\.[A-Za-z0-9]+$", "", name))
    if len(lengths) and (lengths <= SEGMENT_MAX_SAMPLES).all():
        stems = stems.map(lambda stem: re.sub(r"\.\d+$", "", stem))
    return stems.to_numpy()


def _median_length(lengths: pd.Series) -> int | None:
    values = pd.to_numeric(lengths, errors="coerce")
    values = values[(values > 0) & (values < np.iinfo(np.int64).max)]
    return int(values.median()) if len(values) else None


def read_features(path: str | Path, *, require_labels: bool = True) -> pd.DataFrame:
    """Read the CSV and check the 57 feature columns: present, numeric and finite."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"feature file not found: {path}; {GET_DATA_HINT}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass the CSV file inside it with --data")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; {GET_DATA_HINT}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable CSV ({str(e).splitlines()[0]})") from None
    if frame.empty:
        raise DataError(f"{path} has a header but no rows")
    columns = [str(c) for c in frame.columns]
    missing = [c for c in FEATURE_NAMES if c not in columns]
    if missing:
        raise DataError(
            f"{path} lacks {len(missing)} feature column(s), first: {missing[:3]}; "
            "expected the Kaggle GTZAN schema (filename,length,<57 features>,label)")
    known = {FILENAME_COLUMN, LENGTH_COLUMN, LABEL_COLUMN, *FEATURE_NAMES}
    extra = [c for c in columns if c not in known]
    if extra:
        raise DataError(f"{path} has unexpected column(s) {extra[:3]}; remove them "
                        "(expected filename,length,<57 features>,label)")
    if require_labels and LABEL_COLUMN not in columns:
        raise DataError(f"{path} has no '{LABEL_COLUMN}' column; training needs a genre per row")
    for name in FEATURE_NAMES:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = frame.index[values.isna() | ~np.isfinite(values.astype(float))]
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{path}: column '{name}' has a non-numeric, NaN or infinite value "
                f"{frame[name].iloc[row]!r} at data row {row + 1} (line {row + 2}); "
                "fix or drop that row")
        frame[name] = values.astype(np.float64)
    if FILENAME_COLUMN not in columns:
        frame[FILENAME_COLUMN] = [f"row{i}" for i in range(len(frame))]
    if LENGTH_COLUMN not in columns:
        frame[LENGTH_COLUMN] = np.iinfo(np.int64).max
    return frame


def load_dataset(path: str | Path, classes: tuple[str, ...] | None = None) -> Dataset:
    """Load a labelled feature CSV. Labels must be GTZAN genres (or the given `classes`);
    the model's classes are the genres present, in GENRES order."""
    path = Path(path)
    frame = read_features(path)
    labels = frame[LABEL_COLUMN]
    empty = labels.isna() | (labels.astype(str).str.strip() == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{path}: missing label at data row {row + 1} (line {row + 2}); "
                        "every row needs a genre")
    labels = labels.astype(str).str.strip()
    found = sorted(set(labels))
    unknown = [label for label in found if label not in (classes or GENRES)]
    if unknown:
        row = int(np.flatnonzero(labels.isin(unknown).to_numpy())[0])
        raise DataError(f"{path}: unknown label {unknown[0]!r} at data row {row + 1}; "
                        f"expected one of {', '.join(classes or GENRES)}")
    if classes is None:
        classes = tuple(g for g in GENRES if g in found)
    if len(found) < 2:
        raise DataError(f"{path}: only {len(found)} class ({', '.join(found)}) found; "
                        "a classifier needs at least 2 genres")
    index = {c: i for i, c in enumerate(classes)}
    return Dataset(
        X=frame[list(FEATURE_NAMES)].to_numpy(np.float32, copy=True),
        y=labels.map(index).to_numpy(np.int64, copy=True),
        classes=tuple(classes),
        groups=track_ids(frame[FILENAME_COLUMN], frame[LENGTH_COLUMN]),
        filenames=frame[FILENAME_COLUMN].astype(str).to_numpy(),
        sha256=file_sha256(path),
        path=str(path.resolve()),
        clip_samples=_median_length(frame[LENGTH_COLUMN]),
    )
