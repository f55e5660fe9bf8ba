"""The MLP builder shared by training, export and prediction."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gsearch.data.schema import NUMERIC
from gsearch.data.encode import Encoding
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


QUANTILE_KNOTS = 33   # knots of the quantile transform per input (models.mlp.Quantile)
# Training rows the knots are fitted on at most (a seeded sample of them beyond; scikit-learn's
# QuantileTransformer samples 10,000): 33 quantiles of 100,000 rows are as good as of all, and
# a million rows' float64 copy and sort cost 2 GB
QUANTILE_SAMPLE = 100_000


def fit_quantiles(X: np.ndarray, knots: int = QUANTILE_KNOTS) -> tuple[np.ndarray, np.ndarray]:
    """Per input column of the training rows X [n, F] (a sample of QUANTILE_SAMPLE of them at
    most): `knots` quantiles (x) and the normal scores they map to (y), both [F, knots], x
    strictly increasing (ties nudged apart)."""
    from scipy.stats import norm   # lazy: only the quantile transform needs it

    levels = np.linspace(0.5 / knots, 1 - 0.5 / knots, knots)
    if len(X) > QUANTILE_SAMPLE:
        X = X[np.sort(np.random.default_rng(0).choice(len(X), QUANTILE_SAMPLE, replace=False))]
    x = np.quantile(X.astype(np.float64), levels, axis=0).T
    for k in range(1, knots):   # a constant stretch of a column: knots nudged apart
        x[:, k] = np.maximum(x[:, k], x[:, k - 1] + 1e-6 * (1 + np.abs(x[:, k - 1])))
    y = np.broadcast_to(norm.ppf(levels), x.shape).copy()
    return x.astype(np.float32), y.astype(np.float32)


def quantile_transform(X: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """X [n, F] through each column's piecewise-linear map x -> y (flat beyond the ends): what
    Quantile computes in torch."""
    out = np.empty(X.shape, np.float32)   # filled column by column: no float64 copy of X
    for j in range(X.shape[1]):
        out[:, j] = np.interp(X[:, j], x[j], y[j])
    return out


class Quantile(nn.Module):
    """Each input through its training rows' quantiles to a normal score: piecewise linear
    between `knots` points, flat beyond them. In torch each value finds its segment by binary
    search (searchsorted); the ONNX graph, which has no such operator, sums every segment's
    share with ReLU and Min instead: the same map, K times the work (at a million rows with
    570 inputs, 25 s of a 100 s export went to it)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__()
        x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        self.register_buffer("start", x[:, 0].clone())
        self.register_buffer("base", y[:, 0].clone())
        self.register_buffer("knots", x[:, :-1].contiguous())
        self.register_buffer("widths", (x[:, 1:] - x[:, :-1]).clone())
        self.register_buffer("slopes", ((y[:, 1:] - y[:, :-1]) / (x[:, 1:] - x[:, :-1])).clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self.summed(z)
        rise = self.widths * self.slopes   # each segment's whole share
        at = self.base[:, None] + torch.cumsum(rise, dim=1) - rise   # the map at each knot [F, K-1]
        column = z.T.contiguous()                                     # [F, N]
        segment = (torch.searchsorted(self.knots, column, right=True) - 1).clamp_(min=0)
        share = torch.minimum(torch.relu(column - self.knots.gather(1, segment)),
                              self.widths.gather(1, segment))
        return (at.gather(1, segment) + share * self.slopes.gather(1, segment)).T

    def summed(self, z: torch.Tensor) -> torch.Tensor:
        """The same map as a sum over every segment (what the ONNX graph computes)."""
        d = z.unsqueeze(2) - self.knots                      # [N, F, knots - 1]
        step = torch.minimum(torch.relu(d), self.widths)      # each segment's share, 0..width
        return self.base + (step * self.slopes).sum(dim=2)


class Rescale(nn.Module):
    """y * std + mean: a regression's output back in the target's own units (the network
    learns the target standardized with its training rows' mean and std)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


class Preprocess(nn.Module):
    """data.encode.Encoding in torch, inside an exported model: raw rows [N, n_features] (a
    numeric feature's value or NaN, a categorical feature's slot or NaN; data.encode) -> the
    network's inputs [N, encoding.width]. Exports to ONNX with the model (IsNaN, Where, Equal)."""

    def __init__(self, encoding: Encoding):
        super().__init__()
        self.kinds, self.indicators = encoding.kinds, encoding.indicators
        self.slots = tuple(len(c) for c in encoding.categories)
        self.register_buffer("medians", torch.tensor([m or 0.0 for m in encoding.medians],
                                                     dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for j, (kind, indicator, k) in enumerate(zip(self.kinds, self.indicators, self.slots)):
            column = x[:, j:j + 1]
            empty = torch.isnan(column)
            if kind == NUMERIC:
                parts.append(torch.where(empty, self.medians[j], column))
                if indicator:
                    parts.append(empty.float())
                continue
            slot = torch.where(empty, torch.full_like(column, k + 1), column)
            other = (slot < 0) | (slot > k + 1) | (slot != torch.floor(slot))
            slot = torch.where(other, torch.full_like(column, k), slot)
            parts.append((slot == torch.arange(k + 2, dtype=x.dtype, device=x.device)).float())
        return torch.cat(parts, dim=1)


class Pipeline(nn.Module):
    """An exported model that takes raw rows: Preprocess, then the network (an MLP or an
    Ensemble). A table whose encoding is the identity exports the network alone."""

    def __init__(self, preprocess: Preprocess, network: nn.Module):
        super().__init__()
        self.preprocess, self.network = preprocess, network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(x))


def build_mlp(config: TrialConfig, n_features: int, n_classes: int,
              mean: np.ndarray | None = None, std: np.ndarray | None = None, *,
              target: tuple[float, float] | None = None,
              quantiles: tuple[np.ndarray, np.ndarray] | None = None) -> nn.Sequential:
    """[Quantile ->] Standardize -> [Linear -> BatchNorm? -> ReLU -> Dropout] x n_layers ->
    Linear (logits), then for a regression (`target`: the target's mean and std; n_classes 1)
    Rescale. The quantile transform (config.input_transform) maps through `quantiles` (x, y)."""
    mean = np.zeros(n_features, np.float32) if mean is None else mean
    std = np.ones(n_features, np.float32) if std is None else std
    layers: list[nn.Module] = [Standardize(mean, std)]
    if config.input_transform == "quantile":
        if quantiles is None:   # a shape for load_state_dict to fill in
            grid = np.tile(np.arange(QUANTILE_KNOTS, dtype=np.float32), (n_features, 1))
            quantiles = (grid, grid)
        layers.insert(0, Quantile(*quantiles))
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
    if target is not None:
        layers.append(Rescale(*target))
    return nn.Sequential(*layers)


@torch.no_grad()
def scale_logits(model: nn.Module, factor: float) -> None:
    """Multiply a classifier's logits by `factor` (a temperature's 1 / T), in place: its last
    linear layer's weight and bias, so that the exported graph keeps its shape."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    last.weight.mul_(factor)
    last.bias.mul_(factor)


class Ensemble(nn.Module):
    """K classifiers as one module: log of the mean of their softmax probabilities; or K
    regressions (`regression`): the mean of their predictions.

    A classifier's output is a log-probability, so softmax(output) is the averaged probability
    and argmax is the ensemble's vote; one module exports as one ONNX graph."""

    def __init__(self, members: list[nn.Module], *, regression: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.regression = regression

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return torch.stack([m(x) for m in self.members]).mean(dim=0)
        log_probs = torch.stack([m(x).log_softmax(dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def build_ensemble(configs: list[TrialConfig], n_features: int, n_classes: int, *,
                   regression: bool = False) -> Ensemble:
    """Untrained members with unit scalers: the shape load_state_dict fills in."""
    target = (0.0, 1.0) if regression else None
    return Ensemble([build_mlp(c, n_features, n_classes, target=target) for c in configs],
                    regression=regression)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torch_latency_ms(model: nn.Module, row: np.ndarray) -> float:
    """Median milliseconds of a single-row forward pass on the CPU, in torch's current
    thread setting, after warm-up (metrics.median_ms)."""
    model = model.cpu().eval()
    x = torch.as_tensor(np.asarray(row, np.float32).reshape(1, -1))
    with torch.inference_mode():
        return median_ms(lambda: model(x), warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)
