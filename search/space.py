"""The search space: trial -> TrialConfig. Every sampled value is a trial param,
so the dashboard shows it. The README documents these ranges.

The regularizers were kept because each helped on held-out folds of train+validation
(2 x 5-fold track-grouped CV, split seeds 42 and 0, no test rows; 2 x 512 MLP, 150
epochs): the full set scored 76.4%, without input noise 74.9%, without label smoothing
75.6%, with a constant rate 75.4% (cosine 75.6%), and with none of them 74.2%. Weight
decay hardly mattered (1e-5: 76.5%, 1e-1: 75.9%) but is cheap to search. Early stopping
on validation loss is not searched: it scored 74.9% against 75.4% without, and the
exported model is retrained on train+validation, where there is nothing to stop on.
"""

from __future__ import annotations

import optuna

from gsearch.models.config import LR_SCHEDULES, TrialConfig


def suggest_config(trial: optuna.Trial) -> TrialConfig:
    return TrialConfig(
        # architecture
        n_layers=trial.suggest_int("n_layers", 1, 3),
        width=trial.suggest_int("width", 32, 1024, log=True),
        batch_norm=trial.suggest_categorical("batch_norm", [True, False]),
        # optimisation (AdamW; lr is the peak rate of onecycle / the start of cosine)
        lr=trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        lr_schedule=trial.suggest_categorical("lr_schedule", list(LR_SCHEDULES)),
        batch_size=trial.suggest_categorical("batch_size", [32, 64, 128]),
        epochs=trial.suggest_int("epochs", 30, 200, step=10),
        # regularization
        dropout=trial.suggest_float("dropout", 0.0, 0.6),
        weight_decay=trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2),
        input_noise=trial.suggest_float("input_noise", 0.0, 0.3),
    )
