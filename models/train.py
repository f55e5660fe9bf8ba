"""Train one MLP: a plain function of (config, data) -> (model, history). No Optuna here.

Tiny models on ~1000 rows spend their time in per-step overhead, so the data stays
as tensors on the device and batches are slices of a random permutation: no
DataLoader, one host sync per epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from gsearch import GsearchError
from gsearch.data.split import fit_scaler
from gsearch.models.config import TrialConfig
from gsearch.models.mlp import build_mlp, count_parameters

# on_epoch(epoch, val_accuracy, train_loss) -> True to stop training now (pruned).
EpochCallback = Callable[[int, float, float], bool]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainData:
    """Numpy arrays; the validation part is optional (final retraining has none)."""

    X_train: np.ndarray
    y_train: np.ndarray
    n_classes: int
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass
class History:
    val_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_params: int = 0
    stopped_early: bool = False   # the on_epoch callback (the pruner) stopped training
    early_stopped: bool = False   # early_stop_patience ran out
    diverged: str = ""            # why training stopped on a NaN/infinite loss (population)

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)


def batch_starts(n: int, batch: int) -> list[int]:
    """First row of each batch of an epoch; BatchNorm needs 2 rows, so a last single row is dropped."""
    return [s for s in range(0, n, batch) if n - s >= 2]


def diverged_message(train_loss: float, epoch: int, config: TrialConfig) -> str:
    return f"training loss became {train_loss} at epoch {epoch + 1} (lr={config.lr:.3g})"


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GsearchError("--device cuda was asked for but CUDA is not available here; "
                           "use --device cpu or --device auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GsearchError(f"unknown device {name!r}; use auto, cpu or cuda") from None


@torch.inference_mode()
def evaluate_loss_accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(X)
    loss = nn.functional.cross_entropy(logits, y)
    acc = (logits.argmax(dim=1) == y).float().mean()
    return loss.item(), acc.item()


def make_scheduler(config: TrialConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """A per-step learning-rate scheduler, or None for a constant rate."""
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def train(config: TrialConfig, data: TrainData, *, device: torch.device | str = "cpu",
          seed: int = 0, on_epoch: EpochCallback | None = None) -> tuple[nn.Module, History]:
    device = torch.device(device)
    torch.manual_seed(seed)
    mean, std = fit_scaler(data.X_train)
    model = build_mlp(config, data.X_train.shape[1], data.n_classes, mean, std).to(device)
    X = torch.as_tensor(data.X_train, dtype=torch.float32, device=device)
    y = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    has_val = data.X_val is not None and len(data.X_val) > 0
    if has_val:
        X_val = torch.as_tensor(data.X_val, dtype=torch.float32, device=device)
        y_val = torch.as_tensor(data.y_val, dtype=torch.long, device=device)
    noise_scale = torch.as_tensor(std * config.input_noise, device=device)
    # The fused kernel is one pass over each tensor (CPU and CUDA); it is several times
    # faster than the foreach path for these small models.
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    n, batch = len(X), min(config.batch_size, len(X))
    starts = batch_starts(n, batch)
    scheduler = make_scheduler(config, optimizer, config.epochs * len(starts))
    history = History(n_params=count_parameters(model))
    best_val_loss, since_best = math.inf, 0
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for start in starts:
            idx = perm[start:start + batch]
            xb = X[idx]
            if config.input_noise > 0:
                xb = xb + torch.randn_like(xb) * noise_scale
            loss = loss_fn(model(xb), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.detach()
        train_loss = (total / len(starts)).item()
        if not math.isfinite(train_loss):
            history.seconds = time.perf_counter() - t0
            raise DivergedError(diverged_message(train_loss, epoch, config))
        history.train_loss.append(train_loss)
        val_loss, val_acc = evaluate_loss_accuracy(model, X_val, y_val) if has_val else (math.nan, math.nan)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        if on_epoch is not None and on_epoch(epoch, val_acc, train_loss):
            history.stopped_early = True
            break
        if config.early_stop_patience and has_val:
            if val_loss < best_val_loss:
                best_val_loss, since_best = val_loss, 0
            else:
                since_best += 1
            if since_best >= config.early_stop_patience:
                history.early_stopped = True
                break
    history.seconds = time.perf_counter() - t0
    model.eval()
    return model, history
