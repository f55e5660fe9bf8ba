"""The search space: trial -> TrialConfig. Every sampled value is a trial param,
so the dashboard shows it. The README documents these ranges."""

from __future__ import annotations

import optuna

from gsearch.models.config import TrialConfig


def suggest_config(trial: optuna.Trial) -> TrialConfig:
    return TrialConfig(
        n_layers=trial.suggest_int("n_layers", 1, 4),
        width=trial.suggest_int("width", 16, 512, log=True),
        dropout=trial.suggest_float("dropout", 0.0, 0.6),
        batch_norm=trial.suggest_categorical("batch_norm", [True, False]),
        lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", [32, 64, 128]),
        epochs=trial.suggest_int("epochs", 20, 200, step=10),
    )
