"""Learning-rate schedules as tables: the one source of a member's per-step lr and beta1.

The values are those torch's OneCycleLR and CosineAnnealingLR give an AdamW optimizer (a test
compares them step by step), in closed form, so a population can step many members with
different schedules through one fused kernel call each.
"""

from __future__ import annotations

import numpy as np

from gsearch.models.config import TrialConfig

BETA1 = 0.9  # torch.optim.AdamW's default first-moment decay


def schedule_table(config: TrialConfig, total_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr, beta1) for optimizer steps 1..total_steps of `config.lr_schedule`.

    >>> lr, beta1 = schedule_table(TrialConfig(lr=0.01, lr_schedule="cosine"), 4)
    >>> [round(float(v), 5) for v in lr]
    [0.01, 0.00854, 0.005, 0.00146]
    """
    t = np.arange(total_steps, dtype=np.float64)
    if config.lr_schedule == "cosine":
        return config.lr * (1 + np.cos(np.pi * t / total_steps)) / 2, np.full(total_steps, BETA1)
    if config.lr_schedule != "onecycle":
        return np.full(total_steps, config.lr), np.full(total_steps, BETA1)
    # OneCycleLR defaults: pct_start 0.3, cosine annealing, div_factor 25,
    # final_div_factor 1e4, beta1 cycled between 0.95 and 0.85.
    initial = config.lr / 25
    end1 = 0.3 * total_steps - 1
    first = t <= end1
    pct = np.where(first, t / end1, (t - end1) / (total_steps - 1 - end1))

    def anneal(start, end):
        return end + (start - end) / 2 * (np.cos(np.pi * pct) + 1)

    lr = np.where(first, anneal(initial, config.lr), anneal(config.lr, initial / 1e4))
    beta1 = np.where(first, anneal(0.95, 0.85), anneal(0.85, 0.95))
    return lr, beta1


class Patience:
    """Early stopping on validation loss: `ran_out(loss)` is True once `patience` epochs in a
    row brought no better loss (patience 0: never).

    >>> p = Patience(2)
    >>> [p.ran_out(v) for v in (1.0, 0.9, 0.95, 0.93)]
    [False, False, False, True]
    """

    def __init__(self, patience: int):
        self.patience, self.best, self.since_best = patience, float("inf"), 0

    def ran_out(self, loss: float) -> bool:
        if not self.patience:
            return False
        if loss < self.best:
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience
