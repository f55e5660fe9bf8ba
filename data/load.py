"""Find, read and validate a GTZAN feature CSV.

`resolve_data` picks the file a command uses (an explicit path, else the documented
default path, else the copy of GTZAN's ``features_30_sec.csv`` bundled with the package);
`load_dataset` reads it (plain or gzipped) and checks it at the boundary: every way a
file can be wrong is a `DataError` whose one-line message names the column, row or line.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gsearch.data import columns as col
from gsearch.data.columns import MISSING
from gsearch.data.header import EXPECTED, DataError, check_header, show as _show  # noqa: F401 (EXPECTED re-exported)
from gsearch.data.schema import CATEGORICAL, NUMERIC
from gsearch.data.files import (  # noqa: F401 (re-exported)
    GET_DATA_HINT, KAGGLE_GTZAN, SEPARATORS, check_readable, header_names, max_data_mb,
    megabytes, separator, table_bytes,
)
from gsearch.data.schema import (
    FEATURE_NAMES, FILENAME_COLUMN, GENRES, LABEL_COLUMN, LENGTH_COLUMN, SEGMENT_MAX_SAMPLES,
)

# The Kaggle feature table, gzipped, shipped inside the package (see data/README.md).
BUNDLED_DATA = Path(__file__).resolve().with_name("features_30_sec.csv.gz")
# Used instead of the bundled copy when it exists under the current folder.
DEFAULT_DATA = Path("data/gtzan/features_30_sec.csv")
FLOAT32_MAX = col.FLOAT32_MAX
MISSING_LABELS = MISSING   # labels that mean "no label" (columns.MISSING)
_LABEL = "\x00label"   # the label's key in a read table (a feature may be called "label")
_GROUP = "\x00group"   # the group column's (--group)
NEWLINE = b"\n"


@dataclass(frozen=True)
class Dataset:
    """Validated feature rows: X float32 [N, F] (F `features`; a numeric feature's values, NaN
    for an empty cell; a categorical feature's codes into `vocabulary[feature]`, NaN for an
    empty cell), y [N] (int64 class indices, or float32 numbers for a regression), groups [N].

    Every split keeps each group on one side. `grouping` says what a group is: "track" (as
    loaded: all segments of a track), or "artist" (data.artists.by_artist: the GTZAN clips
    with a known artist, grouped by artist, `folds` their fold of the published 3-fold split).
    `sha256` is the digest of the file's uncompressed bytes, so a gzipped copy and the
    plain file have the same fingerprint; `path` is the absolute path it was read from."""

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    groups: np.ndarray
    filenames: np.ndarray
    sha256: str
    path: str
    clip_samples: int | None = None  # median row length in samples; None without a length column
    features: tuple[str, ...] = FEATURE_NAMES   # the columns of X, in order
    label: str = LABEL_COLUMN        # the label's column in the file
    grouping: str = "track"          # what a group is: "track", "artist", or a --group column
    tracks: np.ndarray | None = None  # per row: its track (the groups when grouping is "track")
    folds: np.ndarray | None = None  # per row: its fold of a published split (artist grouping)
    kinds: tuple[str, ...] = ()      # per feature: "numeric" or "categorical" (() : all numeric)
    vocabulary: dict = field(default_factory=dict)  # categorical feature -> its categories, sorted
    task: str = "classification"     # or "regression": y holds numbers, classes is ()
    unlabelled: int = 0              # rows of the file left out for an empty label

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    @property
    def n_tracks(self) -> int:
        return len(np.unique(self.groups if self.tracks is None else self.tracks))


def resolve_data(path: str | Path | None = None) -> Path:
    """The feature file a command reads: `path` when given (even a missing one, so that a
    typo is reported, never silently replaced); else DEFAULT_DATA under the current folder
    when it exists; else the bundled copy of GTZAN's features_30_sec.csv."""
    if path is not None:
        return Path(path)
    if DEFAULT_DATA.exists():
        return DEFAULT_DATA
    return BUNDLED_DATA


def describe_data(ds: Dataset) -> str:
    """One line naming the file a dataset came from, for a command to print."""
    name = "bundled GTZAN features_30_sec.csv" if Path(ds.path) == BUNDLED_DATA else ds.path
    if ds.grouping == "artist" and ds.folds is not None:   # GTZAN's artist map (by_artist)
        return f"{name} ({ds.n_tracks} tracks with a known artist, {ds.n_groups} artists)"
    if ds.grouping != "track":
        return f"{name} ({len(ds.y)} rows, {ds.n_groups} groups of column {ds.grouping!r})"
    if ds.features != FEATURE_NAMES:   # a table of one's own: its rows, not tracks
        return f"{name} ({len(ds.y)} rows, {len(ds.features)} features)"
    return f"{name} ({ds.n_tracks} tracks)"


def file_sha256(path: str | Path, max_mb: float | None = None) -> str:
    """SHA-256 of a feature file's content, uncompressed when the file is gzipped."""
    return hashlib.sha256(_read_bytes(Path(path), max_mb)).hexdigest()


def track_ids(filenames: pd.Series, lengths: pd.Series) -> np.ndarray:
    """The track each row belongs to: segments `blues.00000.3.wav` -> `blues.00000`.

    A file is a segment file when every row is at most SEGMENT_MAX_SAMPLES long;
    then the trailing `.K` of each stem is dropped. Whole-track rows are their own track.
    """
    stems = filenames.astype(str).str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)
    if len(lengths) and (lengths <= SEGMENT_MAX_SAMPLES).all():
        stems = stems.str.replace(r"\.\d+$", "", regex=True)
    return stems.to_numpy(dtype=object)


def _median_length(lengths: pd.Series) -> int | None:
    values = pd.to_numeric(lengths, errors="coerce")
    values = values[(values > 0) & (values < np.iinfo(np.int64).max)]
    return int(values.median()) if len(values) else None


def _read_bytes(path: Path, max_mb: float | None = None) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic number; refused when
    it holds more than `max_mb` megabytes (files.max_data_mb), a gzip file as soon as its
    inflated bytes pass the bound."""
    bound = max_data_mb(max_mb)
    try:
        check_readable(path, DataError)
        raw = table_bytes(path, bound, error=DataError)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive; unzip it and pass the "
                        "features_30_sec.csv inside it with --data")
    return raw


def out_of_memory(path: Path) -> DataError:
    """The one-line answer to a MemoryError while reading the table at `path`."""
    try:
        size = megabytes(path.stat().st_size)
    except OSError:
        size = "size unknown"
    return DataError(f"gsearch ran out of memory reading {path} ({size}); reading a table takes "
                     "about 15-30 MB of memory per MB of CSV: free memory, use a machine with "
                     "more, or pass fewer rows (--max-data-mb refuses such a table at once)")


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 text (a byte-order mark is dropped), or UTF-16 when it starts with its mark."""
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        where = f"offset {e.start}" if utf16 else f"line {raw.count(NEWLINE, 0, e.start) + 1}"
        raise DataError(f"{path} is not {'UTF-16' if utf16 else 'UTF-8'} text (byte "
                        f"{raw[e.start]:#04x} on {where}); save it as a UTF-8 CSV") from None
    if "\x00" in text:
        raise DataError(f"{path} holds NUL characters, so it is not a text CSV (a binary file, or "
                        "UTF-16 without a byte-order mark?); save it as a UTF-8 CSV")
    return text


def _parse(text: str, path: Path, sep: str | None = None) -> tuple[list[str], list[list[str]], list[int]]:
    """Header names, data rows and the line each row ends on; blank lines are skipped. Columns
    are separated by `sep` (or what `separator` sniffs)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator(text, sep))
    rows, lines = [], []
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({e})") from None
    if not rows:
        raise DataError(f"{path} is empty; pass a feature CSV with a header row and one row "
                        "per clip")
    return [name.strip() for name in rows[0]], rows[1:], lines[1:]


def _read(path: Path, require_labels: bool, *, label: str = LABEL_COLUMN,
          features: tuple[str, ...] | None = None, drop: tuple[str, ...] = (),
          group: str | None = None, kinds: tuple[str, ...] | None = None,
          categorical: tuple[str, ...] = (), sep: str | None = None,
          bad_rows: dict | None = None, max_mb: float | None = None,
          missing: frozenset = MISSING) -> tuple[pd.DataFrame, str, tuple[str, ...], tuple[str, ...], list[int]]:
    """(frame, SHA-256 of the file, feature names, their kinds, the line each row ends on).
    The frame holds each numeric
    feature as float64 (NaN for an empty cell of a table of one's own) and each categorical one
    as text (None for an empty cell); `kinds` (a model's or a study's) say which is which, else
    a column of one's own is numeric when all its values are numbers and not in `categorical`."""
    header = header_names(path, sep)   # the header's problems first, as `gsearch run` finds
    if header:                         # them before its imports (data.header.check_table)
        check_header(header, path, require_labels, label=label, features=features, drop=drop,
                     group=group, categorical=categorical)
    raw = _read_bytes(path, max_mb)
    names, rows, lines = _parse(_decode(raw, path), path, sep)
    features = check_header(names, path, require_labels, label=label, features=features, drop=drop,
                            group=group, categorical=categorical)
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    for i, (row, line) in enumerate(zip(rows, lines)):
        if len(row) != len(names):
            error = (f"{path}: line {line} has {len(row)} fields, the header has {len(names)}; "
                     "fix or drop that row")
            if bad_rows is None:
                raise DataError(error)
            bad_rows[i] = error   # predict: the other rows go on
            rows[i] = [""] * len(names)
    columns = dict(zip(names, map(list, zip(*rows))))   # column by column, transposed in C
    names = columns.get(FILENAME_COLUMN)
    data = {FILENAME_COLUMN: names if names is not None else
            np.char.add("row", np.arange(len(rows)).astype(str)).astype(object),
            LENGTH_COLUMN: np.iinfo(np.int64).max}
    if LENGTH_COLUMN in columns:
        lengths = col.numbers(columns[LENGTH_COLUMN], LENGTH_COLUMN, path, lines)
        nonpositive = np.flatnonzero(lengths <= 0)
        if len(nonpositive):
            i = int(nonpositive[0])
            raise DataError(f"{path}: column '{LENGTH_COLUMN}' has {_show(columns[LENGTH_COLUMN][i])} "
                            f"at data row {i + 1} (line {lines[i]}); a length is a positive "
                            "number of samples")
        data[LENGTH_COLUMN] = lengths
    own = features != FEATURE_NAMES
    found, refused = [], []   # each column's first refused cell, said together
    for j, name in enumerate(features):
        values = columns[name]
        parsed = None
        if kinds is not None or name in categorical or not own:
            kind = kinds[j] if kinds is not None else CATEGORICAL if name in categorical else NUMERIC
        else:   # a column of one's own: numeric when every cell that is not empty is a number
            parsed = col.parse_numbers(values, missing)
            kind = CATEGORICAL if parsed[2].any() else NUMERIC
        found.append(kind)
        if kind == NUMERIC:
            hint = "; the model reads numbers there" if kinds is not None else ""
            try:
                data[name] = col.numbers(values, name, path, lines, gaps=own, hint=hint,
                                         parsed=parsed, bad_rows=bad_rows, missing=missing)
            except DataError as e:
                refused.append(str(e))
        else:
            data[name] = col.clean_text(values, missing)
    if refused:
        raise DataError(_together(refused, path))
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(rows)))
    if label in columns:   # kept apart from the features, whatever the label column's name
        frame[_LABEL] = [value.strip() for value in columns[label]]
    if group is not None:
        values = [value.strip() for value in columns[group]]
        empty = [i for i, value in enumerate(values) if value.lower() in missing]
        if empty:
            i = empty[0]
            raise DataError(f"{path}: column {_show(group)} (--group) has no value at data row "
                            f"{i + 1} (line {lines[i]}); give every row a group, or drop the row")
        frame[_GROUP] = values
    return frame, hashlib.sha256(raw).hexdigest(), features, tuple(found), lines


def _together(refused: list[str], path: Path) -> str:
    """Several columns' refusals in one line: the first whole, then each other column's cell."""
    if len(refused) == 1:
        return refused[0]
    fix = "; fix or drop that row"
    cells = [r.removeprefix(f"{path}: ").split(fix)[0] for r in refused]
    return (f"{path}: {len(refused)} columns have a cell that is not a number: "
            + "; ".join(cells) + "; fix or drop those rows")


def read_features(path: str | Path, *, require_labels: bool = True,
                  features: tuple[str, ...] | None = None,
                  kinds: tuple[str, ...] | None = None, sep: str | None = None,
                  bad_rows: dict | None = None, max_mb: float | None = None,
                  missing: str | tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a feature CSV (plain or gzipped, UTF-8 or UTF-16) and check it: the feature
    columns (`features` by name, e.g. a model's, of `kinds`; else the Kaggle GTZAN schema's 57,
    or a table of one's own: see load_dataset) present once each, every row as long as the
    header, every numeric feature a finite float32 number (or, in a table of one's own, empty).
    Returns numeric features as float64 (NaN: empty), categorical ones as text (None: empty),
    `filename` (`rowN` when absent) and `length` (int64 max when absent). With `bad_rows` (a
    dict), a row that cannot be read (a ragged line, text where a number goes) is recorded
    there (row index -> the one-line refusal) instead of stopping the file. `missing`: the
    words that mean an empty cell besides an empty one (columns.missing_words; None: MISSING)."""
    path = Path(path)
    try:
        return _read(path, require_labels, features=features, kinds=kinds, sep=sep,
                     bad_rows=bad_rows, max_mb=max_mb, missing=col.missing_words(missing))[0]
    except MemoryError:
        raise out_of_memory(path) from None


def load_dataset(path: str | Path, classes: tuple[str, ...] | None = None, *,
                 label: str = LABEL_COLUMN, features: tuple[str, ...] | None = None,
                 drop: tuple[str, ...] = (), group: str | None = None,
                 kinds: tuple[str, ...] | None = None, categorical: tuple[str, ...] = (),
                 task: str = "auto", sep: str | None = None,
                 max_mb: float | None = None,
                 missing: str | tuple[str, ...] | None = None) -> Dataset:
    """Load a labelled feature table: the Kaggle GTZAN schema (57 named features, rows grouped
    into tracks by filename), or any CSV of one's own with a `label` column (another with
    `label=`): its features are every column but the label, `filename`, `length` and the
    `drop`ped ones, or exactly `features` (by name, of `kinds`). A feature of one's own is
    numeric when all its values are numbers (empty cells allowed), else categorical, as is
    every column named in `categorical`. A row without a label is left out (`unlabelled`
    counts them).

    `task`: classification (any 2 or more class names; the classes are GENRES' order when
    every label is a GTZAN genre, else sorted, or the given `classes`, a study's, which every
    label must then be one of), regression (labels are numbers), or auto (regression for a
    label of numbers with more than columns.REGRESSION_MIN_VALUES distinct values). With
    `group`, that column (not a feature) says which rows belong together (an artist, a session,
    a patient): rows are grouped by its values instead of by track, and every split keeps a
    group on one side. `max_mb`: the most megabytes of CSV read (files.max_data_mb); a table
    that runs out of memory all the same is refused in one line. `missing`: the words that
    mean an empty cell, in features and label, besides an empty one (a comma list;
    columns.missing_words; None: columns.MISSING; "": none).

    >>> ds = load_dataset(resolve_data(BUNDLED_DATA))
    >>> ds.X.shape, ds.classes[:3], ds.n_tracks, ds.features[:2], ds.task
    ((1000, 57), ('blues', 'classical', 'country'), 1000, ('chroma_stft_mean', 'chroma_stft_var'), 'classification')
    """
    path = Path(path)
    try:
        return _load(path, classes, label=label, features=features, drop=drop, group=group,
                     kinds=kinds, categorical=categorical, task=task, sep=sep, max_mb=max_mb,
                     missing=col.missing_words(missing))
    except MemoryError:
        raise out_of_memory(path) from None


def _load(path: Path, classes, *, label, features, drop, group, kinds, categorical, task, sep,
          max_mb, missing) -> Dataset:
    frame, sha256, features, kinds, lines = _read(
        path, require_labels=True, label=label, features=None if features is None else tuple(features),
        drop=tuple(drop), group=group, kinds=None if kinds is None else tuple(kinds),
        categorical=tuple(categorical), sep=sep, max_mb=max_mb, missing=missing)
    labelled = ~col.is_missing(frame[_LABEL].to_numpy(dtype=object), missing)
    if not labelled.any():
        raise DataError(f"{path}: column {_show(label)} has no label in any row; name the label "
                        "column with --label")
    if not labelled.all():
        frame = frame[labelled].reset_index(drop=True)
        lines = [line for line, keep in zip(lines, labelled) if keep]
    rows = None if labelled.all() else [int(i) + 1 for i in np.flatnonzero(labelled)]  # in the file
    task = ("classification" if classes is not None else
            col.task_of(list(frame[_LABEL]), task, missing))
    if task == "regression":
        y = col.numbers(list(frame[_LABEL]), label, path, lines, rows=rows,
                        missing=missing).astype(np.float32)
        classes = ()
    else:
        y, classes = _classes(frame[_LABEL], classes, path, label, rows)
    vocabulary, X = {}, np.empty((len(frame), len(features)), np.float32)
    for j, (name, kind) in enumerate(zip(features, kinds)):
        if kind == NUMERIC:
            X[:, j] = frame[name].to_numpy(np.float64)
        else:
            values = frame[name].fillna("").to_numpy(dtype=object)   # pandas: None or NaN
            X[:, j], vocabulary[name] = col.categories(values, name, path, lines, missing=missing)
    tracks = track_ids(frame[FILENAME_COLUMN], frame[LENGTH_COLUMN])
    groups = tracks if group is None else _groups(frame[_GROUP].to_numpy(dtype=object), tracks,
                                                   path, group)
    return Dataset(
        X=X, y=y, classes=tuple(classes), groups=groups, tracks=tracks,
        filenames=frame[FILENAME_COLUMN].astype(str).to_numpy(),
        sha256=sha256, path=str(path.resolve()), clip_samples=_median_length(frame[LENGTH_COLUMN]),
        features=tuple(features), label=label, grouping=group or "track", kinds=tuple(kinds),
        vocabulary=vocabulary, task=task, unlabelled=int((~labelled).sum()))


def _classes(labels: pd.Series, classes: tuple[str, ...] | None, path: Path, label: str,
             rows: list[int] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The class index of every row, and the classes (see load_dataset)."""
    if classes is not None:
        unknown = np.flatnonzero(~labels.isin(classes).to_numpy())
        if len(unknown):
            row = int(unknown[0])
            shown = row + 1 if rows is None else rows[row]
            raise DataError(f"{path}: unknown label {_show(labels.iloc[row])} at data row {shown}; "
                            f"expected one of {', '.join(classes)}")
    found = set(labels)
    if len(found) < 2:
        raise DataError(f"{path}: only {len(found)} class ({', '.join(sorted(found))}) found in "
                        f"column {_show(label)}; a classifier needs at least 2")
    if classes is None:
        classes = (tuple(g for g in GENRES if g in found) if found <= set(GENRES)
                   else tuple(sorted(found)))
    index = {c: i for i, c in enumerate(classes)}
    return labels.map(index).to_numpy(np.int64, copy=True), tuple(classes)


def _groups(groups: np.ndarray, tracks: np.ndarray, path: Path, group: str) -> np.ndarray:
    """The --group column's values, checked: all segments of a track share one."""
    per_track = pd.Series(groups).groupby(tracks).nunique()
    if (per_track > 1).any():   # its segments would land on two sides of a split
        track = per_track.index[int(np.argmax(per_track.to_numpy() > 1))]
        raise DataError(f"{path}: track {_show(str(track))} has rows in more than one group of "
                        f"column {_show(group)} (--group); all segments of a track must share "
                        "its group")
    return groups
