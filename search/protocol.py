"""The evaluation protocol of a study: how its trials are scored, recorded in the study.

One frozen dataclass holds the split sizes, the split seed, the CV folds and what a group is
(a track, on GTZAN an artist with the published artist-filtered folds, or the value of a
column of the user's table: `--group COL`); its defaults are
written here once and used by `run`, `export-best` and `evaluate`, and it makes every split:
the test holdout, the validation split, the CV folds, none with a group on two sides. A study records the protocol and the
data file's fingerprint when it is created; every later run, worker, export or evaluation
reads the protocol back from the study (`Protocol.of`) and refuses other data or options.

>>> Protocol().describe()
'test 20% of tracks (split seed 42), validation 20% of the rest'
>>> Protocol(cv=5).describe()
'test 20% of tracks (split seed 42), 5-fold CV on the rest'
>>> Protocol(groups="artist", test_fold=2).describe()
'GTZAN clips with a known artist, no artist on two sides: test artist fold 2, validation 20% of the rest'
>>> Protocol(group="session").describe()
"rows grouped by column 'session', no group on two sides: test 20% of the groups (split seed 42), validation 20% of the rest"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gsearch import GsearchError
from gsearch.data.schema import ARTIST_FOLDS
from gsearch.search import records

# lazy: the CLI reads the defaults below when it starts (gsearch --help), before pandas,
# torch or Optuna are needed; the splits import the data and model floors where they are made
if TYPE_CHECKING:
    import numpy as np
    import optuna

    from gsearch.data.load import Dataset
    from gsearch.data.split import Split
    from gsearch.models.population import TrainData


@dataclass(frozen=True)
class Protocol:
    test_size: float = 0.2   # fraction of tracks held out for the final test, never searched
    val_size: float = 0.2    # fraction of the remaining tracks used for validation
    split_seed: int = 42     # seeds the test holdout, the validation split and the CV folds
    cv: int = 1              # >1: score each trial by k-fold CV on train+validation
    groups: str = "track"    # what no split divides: "track", or "artist" (GTZAN's artist map)
    test_fold: int | None = None   # "artist": test on this published fold (1-3), not test_size
    group: str | None = None  # or a column of the table: rows with one value stay together

    # Recorded keys that must match between the runs and exports of one study.
    GUARDED = (records.DATA_SHA256, records.FEATURES, records.KINDS, records.LABEL, records.TASK,
               "split_seed", "test_size", "val_size", "cv", "groups", "test_fold", "group")
    GROUPS = ("track", "artist")

    def __post_init__(self):
        if self.groups not in self.GROUPS:
            raise GsearchError(f"unknown --groups {self.groups!r}; use track or artist")
        if self.group is not None and self.groups != "track":
            raise GsearchError(f"--group {self.group} groups rows by a column of your table, "
                               "--groups artist by GTZAN's artist map: pass one of them")
        if self.test_fold is not None and self.groups != "artist":
            raise GsearchError("--test-fold picks one of GTZAN's published artist folds; "
                               "add --groups artist, or drop --test-fold")
        if self.test_fold is not None and self.test_fold not in ARTIST_FOLDS:
            raise GsearchError(f"--test-fold must be one of {', '.join(map(str, ARTIST_FOLDS))} "
                               f"(GTZAN's artist folds), got {self.test_fold}")

    @property
    def grouping(self) -> str:
        """What a group is: "track", "artist", or the --group column's name."""
        return self.group if self.group is not None else self.groups

    def describe(self) -> str:
        scoring = (f"{self.cv}-fold CV on the rest" if self.cv > 1
                   else f"validation {self.val_size:.0%} of the rest")
        if self.group is not None:
            return (f"rows grouped by column {self.group!r}, no group on two sides: test "
                    f"{self.test_size:.0%} of the groups (split seed {self.split_seed}), {scoring}")
        if self.groups == "artist":
            test = (f"test artist fold {self.test_fold}" if self.test_fold is not None
                    else f"test {self.test_size:.0%} of artists (split seed {self.split_seed})")
            return f"GTZAN clips with a known artist, no artist on two sides: {test}, {scoring}"
        return f"test {self.test_size:.0%} of tracks (split seed {self.split_seed}), {scoring}"

    def record(self) -> dict:
        """What an export records of the protocol (model.json's `split`): the sizes and seed, what
        a group is (`groups`: track or artist; or `group`: a column of the table, without
        `groups`), the published test fold and the CV folds where there are, and the whole
        protocol in words (`protocol`)."""
        grouping = {"group": self.group} if self.group is not None else {"groups": self.groups}
        return {"test_size": self.test_size, "val_size": self.val_size, "split_seed": self.split_seed,
                **grouping, **({"test_fold": self.test_fold} if self.test_fold is not None else {}),
                **({"cv": self.cv} if self.cv > 1 else {}), "protocol": self.describe()}

    def prepare(self, ds: Dataset) -> Dataset:
        """The rows this protocol searches and tests, grouped as it says: `ds` itself by track
        or by its --group column (loaded with load_dataset(group=...)), or its GTZAN clips
        with a known artist, grouped by artist (data.artists.by_artist)."""
        if self.group is not None and ds.grouping != self.group:
            raise ValueError(f"a dataset grouped by {ds.grouping}, a protocol by column "
                             f"{self.group!r}: load it with load_dataset(..., group={self.group!r})")
        if self.groups == "track":
            return ds
        from gsearch.data.artists import by_artist   # lazy: see the imports

        return by_artist(ds)

    def split(self, ds: Dataset) -> Split:
        """The test holdout and the train/validation split of a prepared `ds` (`prepare`),
        stratified, by group: row indices into that dataset."""
        from gsearch.data.split import split_dataset   # lazy: see the imports

        if ds.grouping != self.grouping:
            raise ValueError(f"a dataset grouped by {ds.grouping}, a protocol by {self.grouping}: "
                             "split Protocol.prepare(ds)")
        return split_dataset(ds, test_size=self.test_size, val_size=self.val_size,
                             seed=self.split_seed, test_fold=self.test_fold)

    def _folds(self, ds: Dataset) -> tuple[Dataset, list[tuple[np.ndarray, np.ndarray]]]:
        """The prepared dataset and the (train rows, validation rows) of each of a trial's
        folds: the validation split, or the CV folds of train+validation."""
        from gsearch.data.split import kfold_splits   # lazy: see the imports

        ds = self.prepare(ds)
        split = self.split(ds)
        if self.cv <= 1:
            return ds, [(split.train, split.val)]
        return ds, kfold_splits(ds, split.train_val, self.cv, self.split_seed)

    def trial_data(self, ds: Dataset) -> list[TrainData]:
        """What one trial trains and validates on: the validation split, or the CV folds of
        train+validation (grouped as the protocol says), each encoded (data.encode) as fitted
        on its own training rows. The test split is never part of it."""
        from gsearch.data.encode import encoded, encoding_of   # lazy: see the imports
        from gsearch.models.population import TrainData   # lazy: see the imports

        ds, folds = self._folds(ds)
        data = []
        for train, val in folds:
            encoding = encoding_of(ds, train)
            data.append(TrainData(X_train=encoded(ds, encoding, train), y_train=ds.y[train],
                                  n_classes=n_outputs(ds), X_val=encoded(ds, encoding, val),
                                  y_val=ds.y[val], task=ds.task))
        return data

    def train_rows(self, ds: Dataset) -> int:
        """The rows one trial trains on (a fold's under --cv): what its search space is sized
        to (space.SearchSpace)."""
        return len(self._folds(ds)[1][0][0])

    def fingerprint(self, ds: Dataset) -> dict:
        """What a study records about its data and protocol (study user attributes); the kinds
        and the task only where they are not what a study made before them means (all numeric,
        classification)."""
        kinds = {records.KINDS: list(ds.kinds)} if "categorical" in ds.kinds else {}
        task = {records.TASK: ds.task} if ds.task != "classification" else {}
        return {records.DATA_SHA256: ds.sha256, records.DATA_PATH: ds.path,
                records.N_ROWS: int(len(ds.y)), records.CLASSES: list(ds.classes),
                records.FEATURES: list(ds.features), **kinds, records.LABEL: ds.label, **task,
                **asdict(self)}

    @classmethod
    def of(cls, study: optuna.Study) -> "Protocol":
        """The protocol a study recorded (defaults for keys an older study lacks)."""
        attrs = study.user_attrs
        defaults = cls()

        def value(key):
            default = getattr(defaults, key)
            recorded = attrs.get(key, default)
            return recorded if default is None or recorded is None else type(default)(recorded)

        return cls(**{key: value(key) for key in asdict(defaults)})

    def check(self, study: optuna.Study, ds: Dataset) -> None:
        """Refuse other data or protocol options than the study was made with."""
        expected = self.fingerprint(ds)
        # studies made before --cv used the split, before --groups the tracks; kinds and task
        # are recorded where they are not all numeric and classification
        recorded = {"cv": 1, "groups": "track", "test_fold": None, "group": None, **study.user_attrs}
        for key in (records.KINDS, records.TASK):
            recorded.setdefault(key, None)
            expected.setdefault(key, None)
        for key in self.GUARDED:
            if key in recorded and recorded[key] != expected[key]:
                made = _data_name(recorded.get(records.DATA_PATH))
                if key == records.DATA_SHA256:
                    raise GsearchError(
                        f"study '{study.study_name}' was made with {made} ({key} "
                        f"{str(recorded[key])[:12]}...), this run reads {_data_name(ds.path)} "
                        f"({key} {expected[key][:12]}...); use the same data and split options, "
                        "or a new --study name")
                if key == records.FEATURES:
                    ours, theirs = list(recorded[key]), list(expected[key])
                    first = next((a, b) for a, b in zip(ours + [None], theirs + [None]) if a != b)
                    raise GsearchError(
                        f"study '{study.study_name}' was made with {len(ours)} feature columns "
                        f"(data {made}), this run has {len(theirs)} (first difference: "
                        f"{first[0]!r} against {first[1]!r}); use the same data, --label and "
                        "--drop, or a new --study name")
                raise GsearchError(
                    f"study '{study.study_name}' was made with {key}={recorded[key]!r} "
                    f"(data {made}), this run has {key}={expected[key]!r}; "
                    "use the same data and split options, or a new --study name")


def n_outputs(ds: Dataset) -> int:
    """The network's outputs for a dataset: one per class, or one number (a regression)."""
    return 1 if ds.task == "regression" else len(ds.classes)


def _data_name(path: str | None) -> str:
    """A feature file, shortly: 'bundled GTZAN features_30_sec.csv' or its file name."""
    if not path:
        return "unrecorded data"
    from gsearch.data.load import BUNDLED_DATA   # lazy: see the imports

    return "bundled GTZAN features_30_sec.csv" if Path(path) == BUNDLED_DATA else Path(path).name
