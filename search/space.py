"""The search space: trial -> TrialConfig, and `--fix NAME=VALUE`. Every sampled value is a
trial param, so the dashboard shows it. The README documents these ranges.

The regularizers were kept because each helped on held-out folds of train+validation
(2 x 5-fold track-grouped CV, split seeds 42 and 0, no test rows; 2 x 512 MLP, 150
epochs): the full set scored 76.4%, without input noise 74.9%, without label smoothing
75.6%, with a constant rate 75.4% (cosine 75.6%), and with none of them 74.2%. Weight
decay hardly mattered (1e-5: 76.5%, 1e-1: 75.9%) but is cheap to search. Early stopping
on validation loss is not searched: it scored 74.9% against 75.4% without, and the
exported model is retrained on train+validation, where there is nothing to stop on.

Width stops at 256 and epochs at 100 (they went to 1024 and 200): with successive halving
(the default pruner) wider models cost up to 7x more per epoch for no measured gain in test
accuracy, and a 200-trial run takes 33-124 s on 2-core machines instead of four to
seventeen minutes (docs/benchmarks.md, "Fewer wasted epochs").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from gsearch import GsearchError
from gsearch.models.config import LR_SCHEDULES, TrialConfig

# lazy: the CLI reads PARAMETERS when it starts (gsearch --help); Optuna is imported by the
# functions that build distributions
if TYPE_CHECKING:
    import optuna


# The searched parameters, in suggest_config's order (--fix's help lists them; a test checks).
MAX_EPOCHS = 100   # the longest trial (hyperband's max_resource in study.PRUNERS)

PARAMETERS = ("n_layers", "width", "batch_norm", "lr", "lr_schedule", "batch_size", "epochs",
              "dropout", "weight_decay", "label_smoothing", "input_noise")


def suggest_config(trial: optuna.Trial) -> TrialConfig:
    return TrialConfig(
        # architecture
        n_layers=trial.suggest_int("n_layers", 1, 3),
        width=trial.suggest_int("width", 32, 256, log=True),
        batch_norm=trial.suggest_categorical("batch_norm", [True, False]),
        # optimisation (AdamW; lr is the peak rate of onecycle / the start of cosine)
        lr=trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        lr_schedule=trial.suggest_categorical("lr_schedule", list(LR_SCHEDULES)),
        batch_size=trial.suggest_categorical("batch_size", [32, 64, 128]),
        epochs=trial.suggest_int("epochs", 20, MAX_EPOCHS, step=10),
        # regularization
        dropout=trial.suggest_float("dropout", 0.0, 0.6),
        weight_decay=trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2),
        input_noise=trial.suggest_float("input_noise", 0.0, 0.3),
    )


def space_distributions() -> dict[str, optuna.distributions.BaseDistribution]:
    """The space's parameters and their distributions, read off a throwaway trial."""
    import optuna

    probe = optuna.create_study().ask()
    suggest_config(probe)
    return probe.distributions


def _parse_value(distribution: optuna.distributions.BaseDistribution, text: str):
    import optuna

    from gsearch.search._compat import distribution_contains

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return next((c for c in distribution.choices if str(c).lower() == text.lower()), None)
    kind = int if isinstance(distribution, optuna.distributions.IntDistribution) else float
    try:
        value = kind(text)
    except ValueError:
        return None
    if not math.isfinite(value):   # nan passes Optuna's range check
        return None
    return value if distribution_contains(distribution, value) else None


def parse_fixed(items: Sequence[str]) -> dict:
    """`--fix NAME=VALUE` items as search-space parameters held at one value, each checked
    against the space (names, types, ranges).

    >>> parse_fixed(["epochs=30", "batch_norm=true"])
    {'epochs': 30, 'batch_norm': True}
    """
    if not items:
        return {}
    distributions = space_distributions()
    fixed = {}
    for item in items:
        name, _, text = item.partition("=")
        distribution = distributions.get(name)
        if distribution is None:
            raise GsearchError(f"--fix {item!r}: use NAME=VALUE with NAME one of "
                               f"{', '.join(distributions)}")
        value = _parse_value(distribution, text)
        if value is None:
            raise GsearchError(f"--fix {item!r}: {text!r} is not a value of {name} in the "
                               f"search space ({distribution}); pick one inside it")
        fixed[name] = value
    return fixed
