"""The MLP builder shared by training, export and prediction."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gsearch.models.config import TrialConfig
from gsearch.models.metrics import median_ms

# torch_latency_ms: untimed warm-up calls, then timed ones (the median is kept)
LATENCY_WARMUP, LATENCY_REPEATS = 20, 100


class Standardize(nn.Module):
    """(x - mean) / std with the training statistics stored as buffers, so an
    exported model takes raw features."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_mlp(config: TrialConfig, n_features: int, n_classes: int,
              mean: np.ndarray | None = None, std: np.ndarray | None = None) -> nn.Sequential:
    """Standardize -> [Linear -> BatchNorm? -> ReLU -> Dropout] x n_layers -> Linear (logits)."""
    mean = np.zeros(n_features, np.float32) if mean is None else mean
    std = np.ones(n_features, np.float32) if std is None else std
    layers: list[nn.Module] = [Standardize(mean, std)]
    width_in = n_features
    for _ in range(config.n_layers):
        layers.append(nn.Linear(width_in, config.width))
        if config.batch_norm:
            layers.append(nn.BatchNorm1d(config.width))
        layers.append(nn.ReLU())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width_in = config.width
    layers.append(nn.Linear(width_in, n_classes))
    return nn.Sequential(*layers)


class Ensemble(nn.Module):
    """K classifiers as one module: log of the mean of their softmax probabilities.

    The output is a log-probability, so softmax(output) is the averaged probability
    and argmax is the ensemble's vote; one module exports as one ONNX graph."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([m(x).log_softmax(dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def build_ensemble(configs: list[TrialConfig], n_features: int, n_classes: int) -> Ensemble:
    """Untrained members with unit scalers: the shape load_state_dict fills in."""
    return Ensemble([build_mlp(c, n_features, n_classes) for c in configs])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torch_latency_ms(model: nn.Module, row: np.ndarray) -> float:
    """Median milliseconds of a single-row forward pass on the CPU, in torch's current
    thread setting, after warm-up (metrics.median_ms)."""
    model = model.cpu().eval()
    x = torch.as_tensor(np.asarray(row, np.float32).reshape(1, -1))
    with torch.inference_mode():
        return median_ms(lambda: model(x), warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)
