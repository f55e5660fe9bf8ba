"""The objective: trial -> TrialConfig -> train -> validation accuracy.

A trial is evaluated on `evaluation_sets`: the fixed validation split (cv=1) or k
track-grouped folds of train+validation (cv>1). Validation accuracy is reported
after every epoch (learning curves in the dashboard) and the pruner may stop the
trial there; with folds, the first fold is reported and pruned on, and the value
is the mean final accuracy over folds.

The protocol belongs to the study: `gsearch run --cv K` records cv=K in the study's
user attributes (guarded on resume like the split), and the folds are seeded by the
study's split seed, so every run and worker of a study scores trials alike.
"""

from __future__ import annotations

import numpy as np
import optuna
import torch

from gsearch.data.load import Dataset
from gsearch.data.split import Split, kfold_splits
from gsearch.models.train import DivergedError, History, TrainData, train
from gsearch.search.space import suggest_config


def _train_data(ds: Dataset, train_rows: np.ndarray, val_rows: np.ndarray) -> TrainData:
    return TrainData(X_train=ds.X[train_rows], y_train=ds.y[train_rows], n_classes=len(ds.classes),
                     X_val=ds.X[val_rows], y_val=ds.y[val_rows])


def evaluation_sets(ds: Dataset, split: Split, cv: int = 1, seed: int = 0) -> list[TrainData]:
    """What one trial trains and validates on. The test split is never part of it."""
    if cv <= 1:
        return [_train_data(ds, split.train, split.val)]
    return [_train_data(ds, a, b) for a, b in kfold_splits(ds, split.train_val, cv, seed)]


def study_protocol(study: optuna.Study) -> tuple[int, int]:
    """(cv, fold seed) recorded by the study; studies made before --cv use the split (cv=1)."""
    attrs = study.user_attrs
    return int(attrs.get("cv", 1)), int(attrs.get("split_seed", 0))


def record_history(trial: optuna.Trial, histories: list[History]) -> None:
    """User attributes shown in the dashboard (first member's curves)."""
    trial.set_user_attr("n_params", histories[0].n_params)
    trial.set_user_attr("train_seconds", round(sum(h.seconds for h in histories), 3))
    trial.set_user_attr("epochs_run", histories[0].epochs_run)
    trial.set_user_attr("train_loss", [round(v, 5) for v in histories[0].train_loss])


class Objective:
    """`cv=None` follows the study's protocol (study_protocol); an int overrides it."""

    def __init__(self, ds: Dataset, split: Split, device: torch.device, seed: int = 0,
                 cv: int | None = None):
        self.ds, self.split, self.cv = ds, split, cv
        self.device = device
        self.seed = seed
        self._sets: dict[tuple[int, int], list[TrainData]] = {}

    def evaluation_sets(self, study: optuna.Study) -> list[TrainData]:
        cv, fold_seed = study_protocol(study)
        key = (cv if self.cv is None else self.cv, fold_seed)
        if key not in self._sets:
            self._sets[key] = evaluation_sets(self.ds, self.split, *key)
        return self._sets[key]

    def __call__(self, trial: optuna.Trial) -> float:
        sets = self.evaluation_sets(trial.study)
        config = suggest_config(trial)
        seed = self.seed + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr("config", config.describe())  # with the fields the space does not search

        def on_epoch(epoch: int, val_accuracy: float, train_loss: float) -> bool:
            trial.report(val_accuracy, epoch)
            return trial.should_prune()

        histories = []
        try:
            for i, data in enumerate(sets):
                _, history = train(config, data, device=self.device, seed=seed,
                                   on_epoch=on_epoch if i == 0 else None)
                histories.append(history)
                if history.stopped_early:
                    break
        except DivergedError as e:  # a hopeless configuration, not a crash: the study goes on
            trial.set_user_attr("pruned_reason", str(e))
            raise optuna.TrialPruned(str(e)) from None
        record_history(trial, histories)
        if len(sets) > 1:
            trial.set_user_attr("fold_accuracies", [round(h.val_accuracy[-1], 5) for h in histories])
        if histories[-1].stopped_early:
            reason = (f"pruner stopped it after epoch {history.epochs_run} "
                      f"(validation accuracy {history.val_accuracy[-1]:.3f})")
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        return float(np.mean([h.val_accuracy[-1] for h in histories]))
