"""TrialConfig: the one meeting point between the search (Optuna) and training (PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from gsearch import GsearchError

LR_SCHEDULES = ("constant", "onecycle", "cosine")
CLASS_WEIGHTS = ("none", "balanced")   # balanced: each class weighs as much in the loss
LOSSES = ("mse", "huber")              # a regression's loss, on the standardized target
INPUT_TRANSFORMS = ("standardize", "quantile")   # quantile: each input mapped through its
                                                 # training rows' quantiles to a normal score


@dataclass(frozen=True)
class TrialConfig:
    n_layers: int = 2            # hidden layers
    width: int = 256             # units per hidden layer
    dropout: float = 0.3
    batch_norm: bool = True
    lr: float = 1e-3             # AdamW learning rate
    weight_decay: float = 1e-4   # AdamW decoupled weight decay
    batch_size: int = 64
    epochs: int = 100
    label_smoothing: float = 0.0
    input_noise: float = 0.0     # std of Gaussian noise on standardized inputs while training
    lr_schedule: str = "constant"  # constant | onecycle | cosine (per step, over all epochs)
    early_stop_patience: int = 0   # stop after this many epochs without a better validation
                                   # loss (0 = off); needs a validation part
    # fields added after gsearch 0.1.0: to_dict leaves them out at their defaults, so that a
    # configuration that does not use them is written as before (model.json, stored trials)
    class_weight: str = field(default="none", metadata={"added": True})  # classification: none |
                                   # balanced (each class weighs as much in the loss)
    loss: str = field(default="mse", metadata={"added": True})           # regression: mse | huber
    input_transform: str = field(default="standardize", metadata={"added": True})  # or quantile

    def __post_init__(self) -> None:
        checks = {
            "n_layers": self.n_layers >= 0,
            "width": self.width >= 1,
            "dropout": 0 <= self.dropout < 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 2,
            "epochs": self.epochs >= 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "input_noise": self.input_noise >= 0,
            "lr_schedule": self.lr_schedule in LR_SCHEDULES,
            "early_stop_patience": self.early_stop_patience >= 0,
            "class_weight": self.class_weight in CLASS_WEIGHTS,
            "loss": self.loss in LOSSES,
            "input_transform": self.input_transform in INPUT_TRANSFORMS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise GsearchError(f"invalid model configuration: {bad[0]}={getattr(self, bad[0])!r}")

    def to_dict(self) -> dict:
        """Every field, but those added after gsearch 0.1.0 only where they differ from their
        default."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not f.metadata.get("added") or getattr(self, f.name) != f.default}

    def describe(self) -> str:
        """Every field on one readable line (searched or not), e.g. for the dashboard."""
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.to_dict().items())

    @classmethod
    def from_dict(cls, values: dict) -> "TrialConfig":
        """Build from stored params; keys that are not config fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
