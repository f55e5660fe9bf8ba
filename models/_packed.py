"""The packed population: the tensors of a population's members, stacked and zero-padded into
one batched model, and its forward pass, loss and fused AdamW step (models.population's
internals; population.Population is the trainer that uses them).

Inside, a member's tensors are named, not indexed: each linear layer is a `_Layer` record
(weight, bias, and for hidden layers the batch-norm scale, shift and running statistics), and
AdamW's two moments are records of the same shape. `_Packed`, built from the members whenever
membership changes, holds the zero-padded stacks of those records layer by layer, the
per-member hyperparameter tensors, and each member's slice of every stack for its fused AdamW
call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gsearch.models._compat import fused_adamw_step
from gsearch.models.config import TrialConfig
from gsearch.models.mlp import build_mlp, count_parameters
from gsearch.models.schedule import Patience
from gsearch.models.validation import CLASSIFICATION, REGRESSION, score

if TYPE_CHECKING:   # population imports this module
    from gsearch.models.population import History

_BN_EPS, _BN_MOMENTUM = 1e-5, 0.1                 # torch.nn.BatchNorm1d defaults
_BETA2, _ADAM_EPS = 0.999, 1e-8                   # torch.optim.AdamW defaults


# -- a member's tensors, by name ----------------------------------------------------------

@dataclass(eq=False)
class _Layer:
    """One linear layer, with its batch norm when hidden: a member's own tensors (weight
    [in, out], the others [1, out]) or, packed, the zero-padded stack of several members'
    (a leading member dimension). The head has no batch-norm tensors. The same record holds
    AdamW's two moments of the learnable tensors (buffers then stay None)."""

    weight: torch.Tensor
    bias: torch.Tensor
    gamma: torch.Tensor | None = None         # batch-norm scale (members without batch
    beta: torch.Tensor | None = None          # norm keep it, unused, beside their shift)
    running_mean: torch.Tensor | None = None  # batch-norm statistics: buffers, not learned
    running_var: torch.Tensor | None = None

    LEARNABLE = ("weight", "bias", "gamma", "beta")

    def learnable(self) -> list[torch.Tensor]:
        return [t for name in self.LEARNABLE if (t := getattr(self, name)) is not None]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: t for f in fields(self) if (t := getattr(self, f.name)) is not None}

    def zeros_like(self) -> "_Layer":
        """Optimizer moments for the learnable tensors."""
        return _Layer(*(None if t is None else torch.zeros_like(t)
                        for t in (self.weight, self.bias, self.gamma, self.beta)))


@dataclass(frozen=True)
class _Target:
    """What a member learns to predict. A classification: class indices, and per-class loss
    weights (class_weight "balanced": n / (C * rows of the class)). A regression: the target
    standardized with the training rows' mean and std (`scale`), which to_module's Rescale
    undoes; validation is scored in the target's own units."""

    task: str
    y_train: np.ndarray
    y_val: np.ndarray | None
    n_classes: int
    weights: np.ndarray | None = None   # classification, balanced
    scale: tuple[float, float] | None = None   # regression: (mean, std)
    huber: bool = False

    @classmethod
    def of(cls, data, config: TrialConfig) -> "_Target":
        if data.task == REGRESSION:
            y = np.asarray(data.y_train, np.float64)
            std = float(y.std()) if len(y) and y.std() > 1e-12 else 1.0
            return cls(REGRESSION, data.y_train, data.y_val, 1, scale=(float(y.mean()), std),
                       huber=config.loss == "huber")
        weights = None
        if config.class_weight == "balanced":
            counts = np.bincount(np.asarray(data.y_train), minlength=data.n_classes).astype(np.float64)
            weights = np.where(counts > 0, len(data.y_train) / (data.n_classes * np.maximum(counts, 1)),
                               1.0).astype(np.float32)
        return cls(CLASSIFICATION, data.y_train, data.y_val, data.n_classes, weights=weights)

    def train(self, device) -> torch.Tensor:
        if self.task == REGRESSION:
            mean, std = self.scale
            return torch.as_tensor((np.asarray(self.y_train, np.float64) - mean) / std,
                                   dtype=torch.float32, device=device)
        return torch.as_tensor(self.y_train, dtype=torch.long, device=device)

    def val(self, device) -> torch.Tensor:
        """Validation labels in their own units (empty without a validation part)."""
        dtype = torch.float32 if self.task == REGRESSION else torch.long
        return torch.as_tensor(np.zeros(0) if self.y_val is None else self.y_val, dtype=dtype,
                               device=device)


@dataclass(eq=False)
class _Member:
    id: int
    config: TrialConfig
    history: History
    generator: torch.Generator   # shuffles this member's rows
    mean: np.ndarray             # the scaler of its training rows (to_module's Standardize)
    std: np.ndarray
    X: torch.Tensor              # standardized training rows [n, F]
    y: torch.Tensor
    X_val: torch.Tensor          # standardized validation rows [n_val, F] (n_val may be 0)
    y_val: torch.Tensor          # in the target's own units
    target: _Target
    quantiles: tuple | None      # the quantile transform's (x, y) when the config asks for it
    layers: list[_Layer]         # hidden layers, then the head
    exp_avg: list[_Layer]        # AdamW moments, layer by layer
    exp_avg_sq: list[_Layer]
    lr: np.ndarray               # per optimizer step (schedule_table)
    beta1: np.ndarray
    step_t: torch.Tensor         # optimizer steps taken, as the fused AdamW kernel wants it
    patience: Patience
    step: int = 0
    epoch: int = 0

    @property
    def depth(self) -> int:
        return self.config.n_layers


def _initial_layers(config: TrialConfig, n_features: int, n_classes: int, seed: int,
                    device: torch.device) -> tuple[list[_Layer], int]:
    """The weights `build_mlp` draws after torch.manual_seed(seed), as [in, out] matrices,
    and the parameter count. Torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_mlp(config, n_features, n_classes)
    linears = [m for m in model if isinstance(m, nn.Linear)]

    def layer(linear: nn.Linear, hidden: bool) -> _Layer:
        w = linear.out_features
        extra = (torch.ones(1, w), torch.zeros(1, w), torch.zeros(1, w), torch.ones(1, w)) if hidden else ()
        tensors = (linear.weight.detach().T.contiguous(), linear.bias.detach()[None], *extra)
        return _Layer(*(t.to(device) for t in tensors))

    layers = [layer(linear, hidden=True) for linear in linears[:-1]] + [layer(linears[-1], hidden=False)]
    return layers, count_parameters(model)


# -- the packed population ----------------------------------------------------------------

def _stack(tensors: list[torch.Tensor], shape: tuple[int, int], device) -> torch.Tensor:
    """Zero-padded stack [len(tensors), *shape]."""
    out = torch.zeros((len(tensors), *shape), device=device)
    for k, t in enumerate(tensors):
        out[k, :t.shape[0], :t.shape[1]] = t
    return out


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The members' rows [K, n, F]: a view of the one tensor when all share it (no copy)."""
    if all(t is tensors[0] for t in tensors):
        return tensors[0].expand(len(tensors), *tensors[0].shape)
    return torch.stack(tensors)


def _distinct(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' distinct row tensors [D, n, F] and each member's index into them [K, 1]:
    members of the same data and transform share one copy (an export's members of mixed
    transforms stacked a copy each: 435 MB a member for a million rows of 136 inputs)."""
    distinct: list[torch.Tensor] = []
    index = []
    for t in tensors:
        at = next((i for i, d in enumerate(distinct) if d is t), None)
        if at is None:
            distinct.append(t)
            at = len(distinct) - 1
        index.append(at)
    rows = distinct[0].unsqueeze(0) if len(distinct) == 1 else torch.stack(distinct)
    return rows, torch.tensor(index, device=rows.device)[:, None]


def _per_member(values, device, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device).view(len(values), 1, 1)


class _Packed:
    """The members' tensors as padded stacks, deepest member first: what one epoch steps.
    `hidden[l]` holds the members deeper than l (its first dimension); `head` all of them."""

    def __init__(self, members: list[_Member], device: torch.device):
        self.members = ms = sorted(members, key=lambda m: (-m.depth, m.id))
        K, depth = len(ms), ms[0].depth
        n_features, n_classes = ms[0].X.shape[1], ms[0].layers[-1].weight.shape[1]
        widths = [m.layers[0].weight.shape[1] for m in ms if m.depth > 0]
        self.width = H = max(widths + ([n_features] if any(m.depth == 0 for m in ms) else []))
        self.rows = [sum(m.depth > layer for m in ms) for layer in range(depth)]  # members per layer

        def pack(attr: str) -> tuple[list[_Layer], _Layer]:
            hidden = []
            for layer, k in enumerate(self.rows):
                records = [getattr(m, attr)[layer] for m in ms[:k]]
                shape_in = n_features if layer == 0 else H
                hidden.append(_Layer(**{name: _stack([getattr(r, name) for r in records],
                                                     (shape_in, H) if name == "weight" else (1, H), device)
                                        for name in records[0].tensors()}))
            heads = [getattr(m, attr)[-1] for m in ms]
            return hidden, _Layer(_stack([h.weight for h in heads], (H, n_classes), device),
                                  _stack([h.bias for h in heads], (1, n_classes), device))

        self.hidden, self.head = pack("layers")
        self.exp_avg = pack("exp_avg")
        self.exp_avg_sq = pack("exp_avg_sq")
        self.params = [t for layer in (*self.hidden, self.head) for t in layer.learnable()]
        for p in self.params:
            p.requires_grad_()
            p.grad = torch.zeros_like(p)   # backward accumulates into these in place
        self.grads = [p.grad for p in self.params]

        def moments(packed) -> list[torch.Tensor]:
            hidden, head = packed
            return [t for layer in (*hidden, head) for t in layer.learnable()]

        # Per member: its slice of every stack it is in, for one fused AdamW call each.
        stacks = (self.params, self.grads, moments(self.exp_avg), moments(self.exp_avg_sq))
        self.views = [tuple([t.detach()[k] for t in ts if t.shape[0] > k] for ts in stacks)
                      for k in range(K)]

        cs = [m.config for m in ms]
        self.batch_norm = _per_member([c.batch_norm for c in cs], device, torch.bool)
        self.any_bn, self.all_bn = any(c.batch_norm for c in cs), all(c.batch_norm for c in cs)
        self.keep = _per_member([1 - c.dropout for c in cs], device)
        self.any_dropout = any(c.dropout > 0 for c in cs)
        self.noise = _per_member([c.input_noise for c in cs], device)
        self.any_noise = any(c.input_noise > 0 for c in cs)
        self.smoothing = _per_member([c.label_smoothing for c in cs], device).view(K, 1)
        self.any_smoothing = any(c.label_smoothing > 0 for c in cs)
        self.task = ms[0].target.task
        if self.task == REGRESSION:
            scales = [m.target.scale for m in ms]
            self.y_mean = _per_member([a for a, _ in scales], device)
            self.y_std = _per_member([b for _, b in scales], device)
            self.huber = _per_member([m.target.huber for m in ms], device, torch.bool).view(K, 1)
        weights = [m.target.weights for m in ms]
        self.any_weights = any(w is not None for w in weights)
        if self.any_weights:
            C = ms[0].target.n_classes
            self.weights = torch.tensor(np.stack([np.ones(C, np.float32) if w is None else w
                                                  for w in weights]), device=device)
        (self.X, self.x_rows), self.y = _distinct([m.X for m in ms]), torch.stack([m.y for m in ms])
        self.X_val, self.y_val = _stacked([m.X_val for m in ms]), torch.stack([m.y_val for m in ms])
        self.member_rows = torch.arange(K, device=device)[:, None]

    def unpack(self) -> None:
        """Copy each member's slice of the stacks back into its own records."""
        for k, m in enumerate(self.members):
            for attr, (hidden, head) in (("layers", (self.hidden, self.head)),
                                         ("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                packed = [*hidden[:m.depth], head]
                for own, stacked in zip(getattr(m, attr), packed):
                    for name, t in own.tensors().items():
                        setattr(own, name, getattr(stacked, name)[k, :t.shape[0], :t.shape[1]].detach().clone())

    # -- the batched model -----------------------------------------------------------------

    def forward(self, x: torch.Tensor, train: bool, generator: torch.Generator) -> torch.Tensor:
        K = x.shape[0]
        h = x
        if not self.rows or self.rows[0] < K:   # depth-0 members carry their inputs to the head
            h = nn.functional.pad(x, (0, self.width - x.shape[2]))
        for layer, Kl in zip(self.hidden, self.rows):
            z = torch.baddbmm(layer.bias, x[:Kl] if layer is self.hidden[0] else h[:Kl], layer.weight)
            if self.any_bn:
                if train:   # two passes: var_mean over dim 1 is far slower on CPU
                    mean = z.mean(dim=1, keepdim=True)
                    z = z - mean
                    var = (z * z).mean(dim=1, keepdim=True)
                    with torch.no_grad():
                        n = z.shape[1]
                        layer.running_mean.lerp_(mean, _BN_MOMENTUM)
                        layer.running_var.lerp_(var * (n / (n - 1)), _BN_MOMENTUM)
                else:
                    mean, var = layer.running_mean, layer.running_var
                    z = z - mean
                # (z - mean) / sqrt(var + eps) * gamma + beta as one pass; members without
                # batch norm get scale 1 and shift `mean` back.
                scale, shift = torch.rsqrt(var + _BN_EPS) * layer.gamma, layer.beta
                if not self.all_bn:
                    bn = self.batch_norm[:Kl]
                    scale, shift = torch.where(bn, scale, 1.0), torch.where(bn, shift, mean)
                z = torch.addcmul(shift, z, scale)
            z = torch.relu_(z) if self.any_bn else torch.relu(z)
            if train and self.any_dropout:
                mask = torch.rand(z.shape, generator=generator, device=z.device)
                z = z * mask.lt_(self.keep[:Kl]).div_(self.keep[:Kl])
            h = z if Kl == K else torch.cat([z, h[Kl:]])
        return torch.baddbmm(self.head.bias, h, self.head.weight)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch, the mean over its rows, per member [K]: cross-entropy
        with per-member label smoothing (and class weights: their weighted mean), or for a
        regression MSE or Huber on the standardized target."""
        if self.task == REGRESSION:
            error = outputs[:, :, 0] - y
            squared = 0.5 * error.square()
            loss = torch.where(self.huber, torch.where(error.abs() <= 1, squared, error.abs() - 0.5),
                               2 * squared) if self.huber.any() else 2 * squared
            return loss.mean(dim=1)
        logp = torch.log_softmax(outputs, dim=2)
        loss = -logp.gather(2, y[:, :, None]).squeeze(2)
        if self.any_smoothing:
            loss = torch.lerp(loss, -logp.mean(dim=2), self.smoothing)
        if not self.any_weights:
            return loss.mean(dim=1)
        w = self.weights.gather(1, y)
        return (loss * w).sum(dim=1) / w.sum(dim=1)

    def validate(self, outputs: torch.Tensor, metric: str) -> tuple[torch.Tensor, ...]:
        """(loss, accuracy, metric) of the validation rows per member [K]: the loss
        unweighted and unsmoothed (a regression's on the standardized target), the accuracy
        NaN for a regression, the metric in the target's own units."""
        if self.task == REGRESSION:
            standardized = (self.y_val - self.y_mean.view(-1, 1)) / self.y_std.view(-1, 1)
            loss = (outputs[:, :, 0] - standardized).square().mean(dim=1)
            predictions = outputs * self.y_std + self.y_mean
            nan = torch.full_like(loss, math.nan)
            return loss, nan, score(metric, predictions, self.y_val)
        loss = nn.functional.cross_entropy(outputs.transpose(1, 2), self.y_val, reduction="none").mean(1)
        accuracy = (outputs.argmax(dim=2) == self.y_val).float().mean(1)
        return loss, accuracy, accuracy if metric == "accuracy" else score(metric, outputs, self.y_val)

    def adamw(self) -> None:
        """One AdamW step, one fused call per member (lr, beta1 and weight decay differ)."""
        for m, (params, grads, exp_avg, exp_avg_sq) in zip(self.members, self.views):
            lr, beta1 = float(m.lr[m.step]), float(m.beta1[m.step])
            m.step += 1
            m.step_t.add_(1)
            fused_adamw_step(params, grads, exp_avg, exp_avg_sq, m.step_t, lr=lr, beta1=beta1,
                             beta2=_BETA2, weight_decay=m.config.weight_decay, eps=_ADAM_EPS)
