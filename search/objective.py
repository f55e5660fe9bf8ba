"""The objective: trial -> TrialConfig -> train -> validation accuracy.

Validation accuracy is reported after every epoch (learning curves in the
dashboard) and the pruner may stop the trial there.
"""

from __future__ import annotations

import optuna
import torch

from gsearch.data.load import Dataset
from gsearch.data.split import Split
from gsearch.models.train import DivergedError, TrainData, train
from gsearch.search.space import suggest_config


def train_data(ds: Dataset, split: Split) -> TrainData:
    return TrainData(X_train=ds.X[split.train], y_train=ds.y[split.train], n_classes=len(ds.classes),
                     X_val=ds.X[split.val], y_val=ds.y[split.val])


class Objective:
    def __init__(self, ds: Dataset, split: Split, device: torch.device, seed: int = 0):
        self.data = train_data(ds, split)
        self.device = device
        self.seed = seed

    def __call__(self, trial: optuna.Trial) -> float:
        config = suggest_config(trial)
        seed = self.seed + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("device", str(self.device))

        def on_epoch(epoch: int, val_accuracy: float, train_loss: float) -> bool:
            trial.report(val_accuracy, epoch)
            return trial.should_prune()

        try:
            _, history = train(config, self.data, device=self.device, seed=seed, on_epoch=on_epoch)
        except DivergedError as e:  # a hopeless configuration, not a crash: the study goes on
            trial.set_user_attr("pruned_reason", str(e))
            raise optuna.TrialPruned(str(e)) from None
        trial.set_user_attr("n_params", history.n_params)
        trial.set_user_attr("train_seconds", round(history.seconds, 3))
        trial.set_user_attr("epochs_run", history.epochs_run)
        trial.set_user_attr("train_loss", [round(v, 5) for v in history.train_loss])
        if history.stopped_early:
            reason = (f"pruner stopped it after epoch {history.epochs_run} "
                      f"(validation accuracy {history.val_accuracy[-1]:.3f})")
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        return history.val_accuracy[-1]
