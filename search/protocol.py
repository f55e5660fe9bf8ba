"""The evaluation protocol of a study: how its trials are scored, recorded in the study.

One frozen dataclass holds the split sizes, the split seed and the CV folds; its defaults are
written here once and used by `run`, `export-best` and `evaluate`, and it makes every split:
the test holdout, the validation split, the CV folds. A study records the protocol and the
data file's fingerprint when it is created; every later run, worker, export or evaluation
reads the protocol back from the study (`Protocol.of`) and refuses other data or options.

>>> Protocol().describe()
'test 20% of tracks (split seed 42), validation 20% of the rest'
>>> Protocol(cv=5).describe()
'test 20% of tracks (split seed 42), 5-fold CV on the rest'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from gsearch import GsearchError
from gsearch.search import records

# lazy: the CLI reads the defaults below when it starts (gsearch --help), before pandas,
# torch or Optuna are needed; the splits import the data and model floors where they are made
if TYPE_CHECKING:
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

    # Recorded keys that must match between the runs and exports of one study.
    GUARDED = (records.DATA_SHA256, "split_seed", "test_size", "val_size", "cv")

    def describe(self) -> str:
        scoring = (f"{self.cv}-fold CV on the rest" if self.cv > 1
                   else f"validation {self.val_size:.0%} of the rest")
        return f"test {self.test_size:.0%} of tracks (split seed {self.split_seed}), {scoring}"

    def split(self, ds: Dataset) -> Split:
        """The test holdout and the train/validation split of `ds`, stratified, by track."""
        from gsearch.data.split import split_dataset   # lazy: see the imports

        return split_dataset(ds, test_size=self.test_size, val_size=self.val_size, seed=self.split_seed)

    def trial_data(self, ds: Dataset) -> list[TrainData]:
        """What one trial trains and validates on: the validation split, or the CV folds of
        train+validation (grouped by track). The test split is never part of it."""
        from gsearch.data.split import kfold_splits   # lazy: see the imports
        from gsearch.models.population import TrainData

        split = self.split(ds)

        def part(train_rows, val_rows) -> TrainData:
            return TrainData(X_train=ds.X[train_rows], y_train=ds.y[train_rows],
                             n_classes=len(ds.classes), X_val=ds.X[val_rows], y_val=ds.y[val_rows])

        if self.cv <= 1:
            return [part(split.train, split.val)]
        return [part(a, b) for a, b in kfold_splits(ds, split.train_val, self.cv, self.split_seed)]

    def fingerprint(self, ds: Dataset) -> dict:
        """What a study records about its data and protocol (study user attributes)."""
        return {records.DATA_SHA256: ds.sha256, records.DATA_PATH: ds.path,
                records.N_ROWS: int(len(ds.y)), records.CLASSES: list(ds.classes), **asdict(self)}

    @classmethod
    def of(cls, study: optuna.Study) -> "Protocol":
        """The protocol a study recorded (defaults for keys an older study lacks)."""
        attrs = study.user_attrs
        defaults = cls()
        return cls(**{k: type(getattr(defaults, k))(attrs.get(k, getattr(defaults, k)))
                      for k in asdict(defaults)})

    def check(self, study: optuna.Study, ds: Dataset) -> None:
        """Refuse other data or protocol options than the study was made with."""
        expected = self.fingerprint(ds)
        recorded = {"cv": 1, **study.user_attrs}  # studies made before --cv used the split
        for key in self.GUARDED:
            if key in recorded and recorded[key] != expected[key]:
                raise GsearchError(
                    f"study '{study.study_name}' was made with {key}={recorded[key]!r} "
                    f"(data {recorded.get(records.DATA_PATH)}), this run has {key}={expected[key]!r}; "
                    "use the same data and split options, or a new --study name")
