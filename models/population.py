"""The one trainer: a population of K >= 1 MLPs, each with its own TrialConfig, seed and data,
trained at once as one batched model. No Optuna here.

Tiny MLPs spend their time in per-step framework overhead, so K models stepped by one set of
batched ops (torch.baddbmm over stacked weights) cost little more than one. Training a single
configuration (`train`) is a population of one, and `to_module` hands any member back as the
plain `nn.Sequential` that `mlp.build_mlp` builds, for export and prediction.

Members may differ in every TrialConfig field except batch_size, and in their data as long as
the row counts match (the folds of one split do; group the rest with `population_key`):

- width: weights are zero-padded to the widest member. A padded unit computes 0 and gets a zero
  gradient, so AdamW keeps it exactly 0: a member computes what its own MLP would.
- depth: members are ordered deepest first; hidden layer l runs on the members deeper than l
  (a prefix of the stack) and the others carry their last hidden state through.
- batch norm, dropout, lr and its schedule, weight decay, label smoothing, input noise: per
  member tensors broadcast over the batch (schedules are tables, see models/schedule.py).
- epochs: a member leaves when it reaches its own epochs, its early-stopping patience runs
  out, or its loss diverges; `remove` takes a member out early (a pruned trial). Members may
  join at any epoch boundary; the stacks are rebuilt when membership changes.

A member starts from exactly the weights `build_mlp` draws after `torch.manual_seed(seed)`
(without touching torch's global generator) and shuffles its rows with its own generator;
dropout masks and input noise come from the population's generator.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 2, 64)
>>> model, history = train(TrialConfig(n_layers=1, width=8, epochs=3), TrainData(X, y, 2))
>>> history.epochs_run, type(model).__name__
(3, 'Sequential')
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gsearch import GsearchError
from gsearch.models._compat import zero_
from gsearch.models._packed import _Member, _Packed, _Target, _initial_layers
from gsearch.models.validation import CLASSIFICATION
from gsearch.data.split import fit_scaler
from gsearch.models.config import TrialConfig
from gsearch.models.mlp import build_mlp, fit_quantiles, quantile_transform
from gsearch.models.schedule import Patience, schedule_table

# On CPU a member padded to a wider population pays for the padding in every matmul and
# optimizer pass; past about this many squared units that costs more than running a
# population of its own (measured with bench/bench_speed.py). On CUDA padding is nearly free.
_CPU_WIDTH_QUANTUM = 128


# -- what goes in, what comes out ---------------------------------------------------------

@dataclass(frozen=True)
class TrainData:
    """Numpy arrays; the validation part is optional (final retraining has none). A
    classification's y are class indices (`n_classes` of them); a regression's are numbers
    (`n_classes` is then 1: the network's one output). `metric` (models.validation.METRICS)
    scores the validation part every epoch."""

    X_train: np.ndarray
    y_train: np.ndarray
    n_classes: int
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    task: str = CLASSIFICATION
    metric: str = "accuracy"

    @property
    def n_val(self) -> int:
        return 0 if self.X_val is None else len(self.X_val)


@dataclass
class History:
    """One member's curves, one entry per epoch (validation NaN without validation rows)."""

    val_accuracy: list[float] = field(default_factory=list)   # NaN for a regression
    val_score: list[float] = field(default_factory=list)      # the data's metric
    val_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_params: int = 0
    pruned: bool = False          # taken out early by the caller (`Population.remove`)
    early_stopped: bool = False   # config.early_stop_patience ran out
    diverged: str = ""            # why the training loss became NaN or infinite, if it did

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)


@dataclass
class EpochResult:
    """One member's epoch. `done`: it has left the population (epochs reached, early
    stopped, or diverged); `Population.to_module` still has it until `remove`."""

    member: int
    epoch: int            # the member's own epoch, from 0
    train_loss: float
    val_loss: float
    val_accuracy: float
    done: bool
    history: History
    val_score: float = math.nan   # the data's metric (TrainData.metric)


class DivergedError(GsearchError):
    """The training loss became NaN or infinite (`train` raises it; a population member
    leaves with `History.diverged` instead)."""


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


def population_key(config: TrialConfig, data: TrainData, device: torch.device | str = "cpu") -> tuple:
    """Members with equal keys can share a Population: the same row counts and batch size
    (required) and, on CPU, a similar width (for speed)."""
    bucket = 0
    if torch.device(device).type == "cpu" and config.n_layers:
        bucket = math.ceil(config.width ** 2 / _CPU_WIDTH_QUANTUM ** 2)
    return len(data.X_train), data.n_val, config.batch_size, bucket


def batch_starts(n: int, batch: int) -> list[int]:
    """First row of each batch of an epoch; batch norm needs 2 rows, so a last single row is dropped."""
    return [s for s in range(0, n, batch) if n - s >= 2]


class Population:
    """Members trained in lockstep, one epoch per `run_epoch` call.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = TrainData(rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 2, 64), 2,
    ...                  rng.normal(size=(16, 5)).astype(np.float32), rng.integers(0, 2, 16))
    >>> pop = Population()
    >>> a = pop.add(TrialConfig(n_layers=1, width=8, epochs=2), data, seed=0)
    >>> b = pop.add(TrialConfig(n_layers=2, width=16, epochs=3), data, seed=1)
    >>> [(r.member, r.epoch, r.done) for r in pop.run_epoch()]
    [(1, 0, False), (0, 0, False)]
    >>> [(r.member, r.epoch, r.done) for r in pop.run_epoch()]
    [(1, 1, False), (0, 1, True)]
    """

    def __init__(self, *, device: torch.device | str = "cpu", seed: int = 0,
                 inputs: dict[tuple, tuple] | None = None):
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._members: list[_Member] = []     # training
        self._done: dict[int, _Member] = {}   # left (epochs, patience, divergence); kept for to_module
        self._packed: _Packed | None = None   # the stacks, rebuilt when membership changes
        self._shape: tuple | None = None      # (n, n_val, batch_size, n_features, n_classes, task, metric)
        self._next_id = 0
        # (data, transform) -> its tensors (_inputs); `inputs`: a cache shared with other
        # populations (Populations: members of one data in several populations hold it once)
        self._data: dict[tuple, tuple] = {} if inputs is None else inputs

    def __len__(self) -> int:
        return len(self._members)

    @property
    def members(self) -> list[int]:
        return [m.id for m in self._members]

    def add(self, config: TrialConfig, data: TrainData, seed: int) -> int:
        """A new member that starts from build_mlp's initial weights for `seed`; returns its id."""
        shape = (len(data.X_train), data.n_val, config.batch_size, data.X_train.shape[1], data.n_classes,
                 data.task, data.metric)
        if self._shape not in (None, shape):
            raise ValueError(f"member shape {shape} does not match the population's {self._shape} "
                             "(rows, validation rows, batch size, features, classes, task, metric)")
        self._shape = shape
        dev = self.device
        quantiles, mean, std, X, X_val = self._inputs(data, config.input_transform)
        layers, n_params = _initial_layers(config, data.X_train.shape[1], data.n_classes, seed, dev)
        n, batch = len(data.X_train), min(config.batch_size, len(data.X_train))
        lr, beta1 = schedule_table(config, config.epochs * len(batch_starts(n, batch)))
        target = _Target.of(data, config)
        member = _Member(
            id=self._next_id, config=config, history=History(n_params=n_params),
            generator=torch.Generator(device=dev).manual_seed(seed), mean=mean, std=std,
            quantiles=quantiles, X=X, y=target.train(dev), X_val=X_val, y_val=target.val(dev),
            target=target,
            layers=layers, exp_avg=[layer.zeros_like() for layer in layers],
            exp_avg_sq=[layer.zeros_like() for layer in layers],
            lr=lr, beta1=beta1, step_t=torch.zeros((), device=dev),
            patience=Patience(config.early_stop_patience if data.n_val else 0))
        self._next_id += 1
        self._repack_later()
        self._members.append(member)
        return member.id

    def _inputs(self, data: TrainData, transform: str) -> tuple:
        """(quantiles, mean, std, X, X_val) of a member: its rows through the quantile transform
        (where its config asks for it) and standardized, as tensors on the device. Members of
        the same data and transform share them (the folds of a trial, an export's members), so
        that the data is held once, not once per member: a million rows of 136 inputs are half
        a gigabyte each."""
        key = (id(data.X_train), id(data.X_val), transform)
        if key not in self._data:
            quantiles = fit_quantiles(data.X_train) if transform == "quantile" else None

            def inputs(X):   # the quantile transform, where the config asks for it
                return X if quantiles is None or X is None else quantile_transform(X, *quantiles)

            train = inputs(data.X_train)   # transformed once: for the scaler and the member
            mean, std = fit_scaler(train)
            mean_t, std_t = torch.as_tensor(mean, device=self.device), torch.as_tensor(std, device=self.device)

            def standardize(X, transformed=None):
                if X is None:
                    return torch.zeros((0, data.X_train.shape[1]), device=self.device)
                X = inputs(X) if transformed is None else transformed
                t = torch.as_tensor(X, dtype=torch.float32, device=self.device)
                # in place where the array is the transform's own; never into the caller's rows
                t = t.sub_(mean_t) if quantiles is not None else t - mean_t
                return t.div_(std_t)

            self._data[key] = (data, (quantiles, mean, std, standardize(data.X_train, train),
                                      standardize(data.X_val)))   # `data` kept: its ids stay its own
        return self._data[key][1]

    def remove(self, member: int) -> History:
        """Forget a member, training (then it is marked pruned) or done; returns its history."""
        if member in self._done:
            return self._done.pop(member).history
        m = self._find(member)
        self._repack_later()
        self._members.remove(m)
        m.history.pruned = True
        return m.history

    def to_module(self, member: int) -> nn.Sequential:
        """The member as the plain model `build_mlp` builds (its scaler included), on the
        population's device, in eval mode: what export and prediction use."""
        m = self._done.get(member) or self._find(member)
        if m in self._members:
            self._repack_later()   # copies the current weights back into the member's records
        with torch.random.fork_rng(devices=[]):   # its random initial weights are overwritten
            model = build_mlp(m.config, m.X.shape[1], m.layers[-1].weight.shape[1], m.mean, m.std,
                              target=m.target.scale, quantiles=m.quantiles)
        model = model.to(self.device)
        linears = [x for x in model if isinstance(x, nn.Linear)]
        norms = [x for x in model if isinstance(x, nn.BatchNorm1d)]
        with torch.no_grad():
            for linear, layer in zip(linears, m.layers):
                linear.weight.copy_(layer.weight.T)
                linear.bias.copy_(layer.bias[0])
            for norm, layer in zip(norms, m.layers):
                norm.weight.copy_(layer.gamma[0])
                norm.bias.copy_(layer.beta[0])
                norm.running_mean.copy_(layer.running_mean[0])
                norm.running_var.copy_(layer.running_var[0])
        return model.eval()

    def _find(self, member: int) -> _Member:
        for m in self._members:
            if m.id == member:
                return m
        raise KeyError(f"no member {member} in this population")

    def _repack_later(self) -> None:
        if self._packed is not None:
            self._packed.unpack()
            self._packed = None

    def run_epoch(self, until: float = math.inf) -> list[EpochResult]:
        """Train every member for one of its epochs, then validate; one host sync. Past
        `until` (time.monotonic()) an epoch of members that have each finished one is given up
        between two batches and nothing is recorded (the caller ends them: a deadline); a
        member's first epoch always runs out, so that a deadline leaves it a score."""
        stoppable = math.isfinite(until) and all(m.epoch for m in self._members)
        if not self._members or (stoppable and time.monotonic() >= until):
            return []
        t0 = time.perf_counter()
        if self._packed is None:
            self._packed = _Packed(self._members, self.device)
        p = self._packed
        ms, K = p.members, len(p.members)
        n, n_val, batch = self._shape[:3]
        batch = min(batch, n)
        starts = batch_starts(n, batch)
        perm = torch.stack([torch.randperm(n, generator=m.generator, device=self.device) for m in ms])
        total = torch.zeros(K, device=self.device)
        for start in starts:
            if stoppable and time.monotonic() >= until:
                return []
            idx = perm[:, start:start + batch]
            xb, yb = p.X[p.x_rows, idx], p.y[p.member_rows, idx]
            if p.any_noise:
                xb = xb + torch.randn(xb.shape, generator=self.generator, device=xb.device) * p.noise
            loss = p.loss(p.forward(xb, train=True, generator=self.generator), yb)
            zero_(p.grads)
            loss.sum().backward()
            p.adamw()
            total += loss.detach()
        with torch.no_grad():
            if n_val:
                outputs = p.forward(p.X_val, train=False, generator=self.generator)
                val_loss, val_acc, val_score = p.validate(outputs, self._shape[6])
            else:
                val_loss = val_acc = val_score = torch.full((K,), math.nan, device=self.device)
            stats = torch.stack([total / len(starts), val_loss, val_acc, val_score]).T.tolist()
        seconds = (time.perf_counter() - t0) / K
        results, leaving = [], []
        for m, (train_loss, v_loss, v_acc, v_score) in zip(ms, stats):
            h = m.history
            h.seconds += seconds
            epoch = m.epoch
            m.epoch += 1
            if not math.isfinite(train_loss):
                h.diverged = (f"training loss became {train_loss} at epoch {epoch + 1} "
                              f"(lr={m.config.lr:.3g})")
                done = True
            else:
                h.train_loss.append(train_loss)
                h.val_loss.append(v_loss)
                h.val_accuracy.append(v_acc)
                h.val_score.append(v_score)
                h.early_stopped = m.patience.ran_out(v_loss)
                done = m.epoch >= m.config.epochs or h.early_stopped
            results.append(EpochResult(m.id, epoch, train_loss, v_loss, v_acc, done, h, v_score))
            if done:
                leaving.append(m)
        if leaving:
            self._repack_later()
            self._members = [m for m in self._members if m not in leaving]
            self._done.update((m.id, m) for m in leaving)
        return results


Member = tuple[tuple, int]   # (population key, member id in that population)


class Populations:
    """The one driver of training: members of any configuration and data, grouped into
    populations that can share a batched model (`population_key`), every population one
    epoch a round. The trial loop adds and removes members as trials come and go (each fold
    of a trial is a member); `train_population` trains a fixed set to the end.

    The k-th population made gets seed `seed + k` for its shared random draws (dropout,
    input noise); a member's own draws (initial weights, shuffling) follow its own seed.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = TrainData(rng.normal(size=(64, 5)).astype("float32"), rng.integers(0, 2, 64), 2,
    ...                  rng.normal(size=(16, 5)).astype("float32"), rng.integers(0, 2, 16))
    >>> driver = Populations()
    >>> narrow = driver.add(TrialConfig(width=16, epochs=2), data, seed=0)
    >>> wide = driver.add(TrialConfig(width=256, epochs=3), data, seed=1)
    >>> rounds = 0
    >>> while len(driver):
    ...     done = [member for member, result in driver.run_epoch() if result.done]
    ...     rounds += 1
    ...     for member in done:
    ...         _ = driver.remove(member)
    >>> rounds, len(driver.populations)   # two widths, two populations (on the CPU)
    (3, 2)
    """

    def __init__(self, *, device: torch.device | str = "cpu", seed: int = 0):
        self.device, self.seed = torch.device(device), seed
        self.populations: dict[tuple, Population] = {}
        # the members' inputs, shared by all populations: an export's five members of five batch
        # sizes are five populations, which held a copy of a million rows each (435 MB)
        self._inputs: dict[tuple, tuple] = {}

    def __len__(self) -> int:
        """Members still training."""
        return sum(len(pop) for pop in self.populations.values())

    def add(self, config: TrialConfig, data: TrainData, seed: int) -> Member:
        """A new member, in the population its key names (made when first needed)."""
        key = population_key(config, data, self.device)
        if key not in self.populations:
            self.populations[key] = Population(device=self.device, seed=self.seed + len(self.populations),
                                               inputs=self._inputs)
        return key, self.populations[key].add(config, data, seed)

    def run_epoch(self, until: float = math.inf) -> list[tuple[Member, EpochResult]]:
        """One epoch of every member still training, population by population (`until`: as
        Population.run_epoch)."""
        return [((key, result.member), result) for key, pop in self.populations.items()
                for result in pop.run_epoch(until)]

    def remove(self, member: Member) -> History:
        """Forget a member, training (then it is marked pruned) or done; its history."""
        key, id_ = member
        return self.populations[key].remove(id_)

    def to_module(self, member: Member) -> nn.Sequential:
        """The member as the plain model `build_mlp` builds (Population.to_module)."""
        key, id_ = member
        return self.populations[key].to_module(id_)

    def training(self, member: Member) -> bool:
        key, id_ = member
        return id_ in self.populations[key].members


def train_population(configs: list[TrialConfig], datas: list[TrainData], seeds: list[int], *,
                     device: torch.device | str = "cpu",
                     seed: int = 0) -> list[tuple[nn.Sequential | None, History]]:
    """Train members together until all are done (`Populations`); (model, history) per
    member in input order. The model is None for a member that diverged."""
    driver = Populations(device=device, seed=seed)
    members = [driver.add(config, data, s) for config, data, s in zip(configs, datas, seeds, strict=True)]
    index = {member: i for i, member in enumerate(members)}
    out: dict[int, tuple[nn.Sequential | None, History]] = {}
    while len(driver):
        for member, result in driver.run_epoch():
            if result.done:
                model = None if result.history.diverged else driver.to_module(member)
                out[index[member]] = (model, driver.remove(member))
    return [out[i] for i in range(len(configs))]


def train(config: TrialConfig, data: TrainData, *, device: torch.device | str = "cpu",
          seed: int = 0) -> tuple[nn.Sequential, History]:
    """Train one configuration: a population of one. Raises DivergedError on a NaN loss."""
    ((model, history),) = train_population([config], [data], [seed], device=device, seed=seed)
    if history.diverged:
        raise DivergedError(history.diverged)
    return model, history
