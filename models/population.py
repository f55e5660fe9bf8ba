"""Population training: several MLPs, each with its own TrialConfig and data, trained at
once as one batched model. No Optuna here.

Tiny MLPs spend their time in per-step framework overhead, so K models stepped by one
set of batched ops (torch.baddbmm over stacked weights) cost little more than one.
Members may differ in every TrialConfig field except batch_size, and in their data as
long as the row counts match (the folds of one split do; group the rest, see
`population_key`). How the differences are batched:

- width: weights are zero-padded to the widest member. A padded unit computes 0 and gets
  a zero gradient, so AdamW keeps it exactly 0: a member computes what its own MLP would.
- depth: members are ordered deepest first; hidden layer l runs on the members deeper
  than l (a prefix of the batch) and the others carry their last hidden state through.
- batch norm, dropout, lr, weight decay, label smoothing, input noise, lr schedule: per
  member tensors broadcast over the batch.
- epochs: a member leaves when it reaches its own epochs, its early-stopping patience
  runs out, or its loss diverges; `remove` takes a member out early (a pruned trial).
  Members may join at any epoch boundary; the batch is re-packed when membership changes.

A member starts from exactly the weights `train` would build for its seed and shuffles
its rows with its own generator; dropout masks and input noise come from the
population's generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gsearch.data.split import fit_scaler
from gsearch.models.config import TrialConfig
from gsearch.models.mlp import build_mlp, count_parameters
from gsearch.models.train import History, TrainData, batch_starts, diverged_message

_BN_EPS, _BN_MOMENTUM = 1e-5, 0.1                 # torch.nn.BatchNorm1d defaults
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8        # torch.optim.AdamW defaults


# On CPU a member padded to a wider population pays for the padding in every matmul and
# optimizer pass; past about this many squared units that costs more than running a
# population of its own (measured, bench/bench_speed.py). On CUDA padding is nearly free.
_CPU_WIDTH_QUANTUM = 128


def population_key(config: TrialConfig, data: TrainData, device: torch.device | str = "cpu") -> tuple:
    """Members with equal keys share a Population: the same row counts and batch size
    (required) and, on CPU, a similar width (for speed)."""
    n_val = 0 if data.X_val is None else len(data.X_val)
    bucket = 0
    if torch.device(device).type == "cpu":
        bucket = math.ceil(config.width ** 2 / _CPU_WIDTH_QUANTUM ** 2) if config.n_layers else 0
    return len(data.X_train), n_val, config.batch_size, bucket


def schedule_table(config: TrialConfig, total_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr, beta1) for optimizer steps 1..total_steps: the values torch's OneCycleLR /
    CosineAnnealingLR (as used by `train`) give AdamW, in closed form."""
    t = np.arange(total_steps, dtype=np.float64)
    if config.lr_schedule == "cosine":
        return config.lr * (1 + np.cos(np.pi * t / total_steps)) / 2, np.full(total_steps, _BETA1)
    if config.lr_schedule != "onecycle":
        return np.full(total_steps, config.lr), np.full(total_steps, _BETA1)
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


@dataclass
class EpochResult:
    """One member's epoch. `done`: it has left the population (epochs reached, early
    stopped, or diverged; then `history.diverged` says why)."""

    member: int
    epoch: int            # the member's own epoch, from 0
    train_loss: float
    val_loss: float
    val_accuracy: float
    done: bool
    history: History


@dataclass(eq=False)
class _Member:
    id: int
    config: TrialConfig
    history: History
    generator: torch.Generator
    X: torch.Tensor          # standardized training rows [n, F]
    y: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    params: list[torch.Tensor]   # per hidden layer W [in, w], b, gamma, beta [1, w]; head W, b
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    running: list[torch.Tensor]  # per hidden layer mean [1, w], var [1, w]
    lr: np.ndarray               # per optimizer step
    beta1: np.ndarray
    step_t: torch.Tensor         # optimizer steps taken, as the fused AdamW kernel wants it
    step: int = 0
    epoch: int = 0
    best_val_loss: float = math.inf
    since_best: int = 0

    @property
    def depth(self) -> int:
        return self.config.n_layers


def _initial_params(config: TrialConfig, n_features: int,
                    n_classes: int) -> tuple[list[torch.Tensor], int]:
    """The weights `build_mlp` draws (call after torch.manual_seed) as [in, out] matrices,
    and the parameter count."""
    model = build_mlp(config, n_features, n_classes)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    params = []
    for linear in linears[:-1]:
        w = linear.out_features
        params += [linear.weight.detach().T.contiguous(), linear.bias.detach()[None],
                   torch.ones(1, w), torch.zeros(1, w)]
    head = linears[-1]
    return params + [head.weight.detach().T.contiguous(), head.bias.detach()[None]], count_parameters(model)


class Population:
    """Members trained in lockstep, one epoch per `run_epoch` call."""

    def __init__(self, *, device: torch.device | str = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._members: list[_Member] = []
        self._next_id = 0
        self._packed = False
        self._shape: tuple | None = None   # (n, n_val, batch_size, n_features, n_classes)

    def __len__(self) -> int:
        return len(self._members)

    @property
    def members(self) -> list[int]:
        return [m.id for m in self._members]

    def add(self, config: TrialConfig, data: TrainData, seed: int) -> int:
        """A new member that starts from `train`'s initial weights for `seed`; returns its id."""
        if data.X_val is None or len(data.X_val) == 0:
            raise ValueError("population members need validation rows")
        shape = (len(data.X_train), len(data.X_val), config.batch_size, data.X_train.shape[1],
                 data.n_classes)
        if self._shape not in (None, shape):
            raise ValueError(f"member shape {shape} does not match the population's {self._shape} "
                             "(rows, validation rows, batch size, features, classes)")
        self._shape = shape
        dev = self.device
        torch.manual_seed(seed)                       # the same draws as train()
        mean, std = fit_scaler(data.X_train)
        params, n_params = _initial_params(config, data.X_train.shape[1], data.n_classes)
        mean_t, std_t = torch.as_tensor(mean, device=dev), torch.as_tensor(std, device=dev)

        def standardize(X):
            return (torch.as_tensor(X, dtype=torch.float32, device=dev) - mean_t) / std_t

        n, batch = len(data.X_train), min(config.batch_size, len(data.X_train))
        lr, beta1 = schedule_table(config, config.epochs * len(batch_starts(n, batch)))
        params = [p.to(dev) for p in params]
        widths = [p.shape[1] for p in params[2:-2:4]]
        member = _Member(
            id=self._next_id, config=config, history=History(n_params=n_params),
            generator=torch.Generator(device=dev).manual_seed(seed),
            X=standardize(data.X_train), y=torch.as_tensor(data.y_train, dtype=torch.long, device=dev),
            X_val=standardize(data.X_val), y_val=torch.as_tensor(data.y_val, dtype=torch.long, device=dev),
            params=params, exp_avg=[torch.zeros_like(p) for p in params],
            exp_avg_sq=[torch.zeros_like(p) for p in params],
            running=[t for w in widths
                     for t in (torch.zeros(1, w, device=dev), torch.ones(1, w, device=dev))],
            lr=lr, beta1=beta1, step_t=torch.zeros((), device=dev))
        self._next_id += 1
        self._unpack()
        self._members.append(member)
        return member.id

    def remove(self, member: int) -> History:
        """Take a member out (for example a pruned trial); returns its history."""
        for m in self._members:
            if m.id == member:
                self._unpack()
                self._members.remove(m)
                return m.history
        raise KeyError(f"no member {member} in this population")

    # -- packing: per-member tensors <-> padded stacks ------------------------------------

    def _pack(self) -> None:
        ms = self._members = sorted(self._members, key=lambda m: (-m.depth, m.id))
        dev, K = self.device, len(ms)
        n_features = ms[0].X.shape[1]
        hidden = [m.params[0].shape[1] for m in ms if m.depth > 0]
        self.H = H = max(hidden + ([n_features] if any(m.depth == 0 for m in ms) else []))
        self.L = L = ms[0].depth
        self.K_l = [sum(m.depth > layer for m in ms) for layer in range(L)]

        def stack(get, rows: int, shape: tuple[int, int]) -> torch.Tensor:
            out = torch.zeros((rows, *shape), device=dev)
            for k in range(rows):
                t = get(ms[k])
                out[k, :t.shape[0], :t.shape[1]] = t
            return out

        def stacks(attr: str) -> list[torch.Tensor]:
            out = []
            for layer in range(L):
                rows = self.K_l[layer]
                out.append(stack(lambda m: getattr(m, attr)[4 * layer], rows,
                                 (n_features if layer == 0 else H, H)))
                out += [stack(lambda m, j=j: getattr(m, attr)[4 * layer + j], rows, (1, H))
                        for j in (1, 2, 3)]
            n_classes = ms[0].params[-1].shape[1]
            out.append(stack(lambda m: getattr(m, attr)[-2], K, (H, n_classes)))
            out.append(stack(lambda m: getattr(m, attr)[-1], K, (1, n_classes)))
            return out

        self.params = [p.requires_grad_() for p in stacks("params")]
        for p in self.params:
            p.grad = torch.zeros_like(p)   # backward accumulates into these in place
        self.grads = [p.grad for p in self.params]
        self.exp_avg, self.exp_avg_sq = stacks("exp_avg"), stacks("exp_avg_sq")
        # Per member: contiguous views of its slice of every stack, for the fused AdamW kernel.
        self._views = [tuple([t.detach()[k] for t in ts if t.shape[0] > k]
                             for ts in (self.params, self.grads, self.exp_avg, self.exp_avg_sq))
                       + ([m.step_t] * (4 * m.depth + 2),) for k, m in enumerate(ms)]
        self.running = [stack(lambda m, i=i: m.running[i], self.K_l[i // 2], (1, H))
                        for i in range(2 * L)]

        def per_member(values, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=dev).view(K, 1, 1)

        cs = [m.config for m in ms]
        self.bn = per_member([c.batch_norm for c in cs], torch.bool)
        self.any_bn, self.all_bn = any(c.batch_norm for c in cs), all(c.batch_norm for c in cs)
        self.keep = per_member([1 - c.dropout for c in cs])
        self.inv_keep = 1 / self.keep
        self.any_dropout = any(c.dropout > 0 for c in cs)
        self.noise = per_member([c.input_noise for c in cs])
        self.any_noise = any(c.input_noise > 0 for c in cs)
        self.smoothing = per_member([c.label_smoothing for c in cs]).view(K, 1)
        self.any_smoothing = any(c.label_smoothing > 0 for c in cs)
        self.X, self.y = torch.stack([m.X for m in ms]), torch.stack([m.y for m in ms])
        self.X_val, self.y_val = torch.stack([m.X_val for m in ms]), torch.stack([m.y_val for m in ms])
        self.rows = torch.arange(K, device=dev)[:, None]
        self._packed = True

    def _unpack(self) -> None:
        if not self._packed:
            return
        ms, L = self._members, self.L
        for k, m in enumerate(ms):
            def take(stacked: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
                return [s[k, :t.shape[0], :t.shape[1]].detach().clone() for s, t in zip(stacked, like)]
            rows = [4 * layer + j for layer in range(m.depth) for j in range(4)] + [4 * L, 4 * L + 1]
            for attr in ("params", "exp_avg", "exp_avg_sq"):
                stacked = getattr(self, attr)
                setattr(m, attr, take([stacked[i] for i in rows], getattr(m, attr)))
            m.running = take(self.running[:2 * m.depth], m.running)
        self._packed = False

    # -- the batched model --------------------------------------------------------------

    def _forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        K = x.shape[0]
        h = x
        if self.L == 0 or self.K_l[0] < K:   # depth-0 members carry their inputs to the head
            h = nn.functional.pad(x, (0, self.H - x.shape[2]))
        for layer in range(self.L):
            Kl = self.K_l[layer]
            W, b, gamma, beta = self.params[4 * layer:4 * layer + 4]
            z = torch.baddbmm(b, x[:Kl] if layer == 0 else h[:Kl], W)
            if self.any_bn:
                rm, rv = self.running[2 * layer:2 * layer + 2]
                if train:   # two passes: var_mean over dim 1 is far slower on CPU
                    mean = z.mean(dim=1, keepdim=True)
                    z = z - mean
                    var = (z * z).mean(dim=1, keepdim=True)
                    with torch.no_grad():
                        n = z.shape[1]
                        rm.lerp_(mean, _BN_MOMENTUM)
                        rv.lerp_(var * (n / (n - 1)), _BN_MOMENTUM)
                else:
                    mean, var = rm, rv
                    z = z - mean
                # (z - mean) / sqrt(var + eps) * gamma + beta as one pass; members without
                # batch norm get scale 1 and shift `mean` back.
                scale, shift = torch.rsqrt(var + _BN_EPS) * gamma, beta
                if not self.all_bn:
                    bn = self.bn[:Kl]
                    scale, shift = torch.where(bn, scale, 1.0), torch.where(bn, shift, mean)
                z = torch.addcmul(shift, z, scale)
            z = torch.relu_(z) if self.any_bn else torch.relu(z)
            if train and self.any_dropout:
                mask = torch.rand(z.shape, generator=self.generator, device=z.device)
                z = z * mask.lt_(self.keep[:Kl]).mul_(self.inv_keep[:Kl])
            h = z if Kl == K else torch.cat([z, h[Kl:]])
        return torch.baddbmm(self.params[-1], h, self.params[-2])

    def _adamw(self) -> None:
        """torch's fused AdamW kernel, once per member (lr, beta1 and weight decay differ)."""
        for m, (params, grads, exp_avg, exp_avg_sq, steps) in zip(self._members, self._views):
            lr, beta1 = float(m.lr[m.step]), float(m.beta1[m.step])
            m.step += 1
            m.step_t.add_(1)
            torch._fused_adamw_(params, grads, exp_avg, exp_avg_sq, [], steps, lr=lr, beta1=beta1,
                                beta2=_BETA2, weight_decay=m.config.weight_decay, eps=_ADAM_EPS,
                                amsgrad=False, maximize=False)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with per-member label smoothing: the mean over rows, per member."""
        logp = torch.log_softmax(logits, dim=2)
        loss = -logp.gather(2, y[:, :, None]).squeeze(2)
        if self.any_smoothing:
            loss = torch.lerp(loss, -logp.mean(dim=2), self.smoothing)
        return loss.mean(dim=1)

    def run_epoch(self) -> list[EpochResult]:
        """Train every member for one of its epochs, then validate; one host sync."""
        if not self._members:
            return []
        t0 = time.perf_counter()
        if not self._packed:
            self._pack()
        ms, K = self._members, len(self._members)
        n, _, batch, _, _ = self._shape
        batch = min(batch, n)
        starts = batch_starts(n, batch)
        perm = torch.stack([torch.randperm(n, generator=m.generator, device=self.device) for m in ms])
        total = torch.zeros(K, device=self.device)
        for start in starts:
            idx = perm[:, start:start + batch]
            xb, yb = self.X[self.rows, idx], self.y[self.rows, idx]
            if self.any_noise:
                xb = xb + torch.randn(xb.shape, generator=self.generator, device=xb.device) * self.noise
            loss = self._loss(self._forward(xb, train=True), yb)
            torch._foreach_zero_(self.grads)
            loss.sum().backward()
            self._adamw()
            total += loss.detach()
        with torch.no_grad():
            logits = self._forward(self.X_val, train=False)
            val_loss = nn.functional.cross_entropy(logits.transpose(1, 2), self.y_val,
                                                   reduction="none").mean(1)
            val_acc = (logits.argmax(dim=2) == self.y_val).float().mean(1)
            stats = torch.stack([total / len(starts), val_loss, val_acc]).T.tolist()
        seconds = (time.perf_counter() - t0) / K
        results, leaving = [], []
        for m, (train_loss, v_loss, v_acc) in zip(ms, stats):
            h = m.history
            h.seconds += seconds
            epoch = m.epoch
            m.epoch += 1
            if not math.isfinite(train_loss):
                h.diverged = diverged_message(train_loss, epoch, m.config)
                done = True
            else:
                h.train_loss.append(train_loss)
                h.val_loss.append(v_loss)
                h.val_accuracy.append(v_acc)
                done = m.epoch >= m.config.epochs or self._patience_ran_out(m, v_loss)
            results.append(EpochResult(m.id, epoch, train_loss, v_loss, v_acc, done, h))
            if done:
                leaving.append(m)
        if leaving:
            self._unpack()
            self._members = [m for m in ms if m not in leaving]
        return results

    @staticmethod
    def _patience_ran_out(m: _Member, val_loss: float) -> bool:
        if not m.config.early_stop_patience:
            return False
        if val_loss < m.best_val_loss:
            m.best_val_loss, m.since_best = val_loss, 0
        else:
            m.since_best += 1
        m.history.early_stopped = m.since_best >= m.config.early_stop_patience
        return m.history.early_stopped


def train_population(configs: list[TrialConfig], datas: list[TrainData], seeds: list[int], *,
                     device: torch.device | str = "cpu", seed: int = 0,
                     on_epoch=None) -> list[History]:
    """Train members together until all are done; returns their histories in input order.

    on_epoch(results: list[EpochResult]) -> member indices to stop now (pruned).
    """
    pop = Population(device=device, seed=seed)
    ids = [pop.add(c, d, s) for c, d, s in zip(configs, datas, seeds, strict=True)]
    histories = {}
    while len(pop):
        results = pop.run_epoch()
        for r in results:
            if r.done:
                histories[r.member] = r.history
        for i in (on_epoch(results) if on_epoch else ()) or ():
            if ids[i] in pop.members:
                histories[ids[i]] = pop.remove(ids[i])
                histories[ids[i]].stopped_early = True
    return [histories[i] for i in ids]
