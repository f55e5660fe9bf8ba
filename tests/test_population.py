"""The one trainer: population members compute what a plain torch model trained alone
computes, independently of each other; `to_module` hands them back as that model."""

import math

import numpy as np
import pytest
import torch
from conftest import synthetic_frame
from torch import nn

from gsearch.data.load import load_dataset
from gsearch.data.split import fit_scaler
from gsearch.models.config import TrialConfig
from gsearch.models.mlp import build_mlp, count_parameters
from gsearch.models.population import Population, Populations, TrainData, batch_starts, train, train_population
from gsearch.models.schedule import schedule_table
from gsearch.search.protocol import Protocol

# Every test runs on CPU, and on CUDA too where there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainData:
    """A hard enough synthetic problem: accuracies well between chance and 1."""
    path = tmp_path_factory.mktemp("pop") / "f.csv"
    synthetic_frame(tracks_per_class=50, separation=0.3, seed=3).to_csv(path, index=False)
    ds = load_dataset(path)
    return Protocol().trial_data(ds)[0]


def reference_train(config: TrialConfig, data: TrainData, device="cpu", seed: int = 0):
    """The textbook loop, independent of gsearch's trainer: build_mlp, torch's AdamW and
    schedulers, nn.CrossEntropyLoss; returns (model, curves)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    mean, std = fit_scaler(data.X_train)
    model = build_mlp(config, data.X_train.shape[1], data.n_classes, mean, std).to(device)
    X, y = (torch.as_tensor(a, device=device) for a in (data.X_train, data.y_train))
    X_val, y_val = (torch.as_tensor(a, device=device) for a in (data.X_val, data.y_val))
    noise = torch.as_tensor(std * config.input_noise, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    n, batch = len(X), min(config.batch_size, len(X))
    starts = batch_starts(n, batch)
    total_steps = config.epochs * len(starts)
    scheduler = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
                     optimizer, max_lr=config.lr, total_steps=total_steps),
                 "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps),
                 "constant": lambda: None}[config.lr_schedule]()
    curves = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    best, since = math.inf, 0
    for _ in range(config.epochs):
        model.train()
        perm, total = torch.randperm(n, device=device), 0.0
        for start in starts:
            idx = perm[start:start + batch]
            xb = X[idx] + (torch.randn_like(X[idx]) * noise if config.input_noise else 0)
            loss = loss_fn(model(xb), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            logits = model(X_val)
        curves["train_loss"].append(total / len(starts))
        curves["val_loss"].append(nn.functional.cross_entropy(logits, y_val).item())
        curves["val_accuracy"].append((logits.argmax(1) == y_val).float().mean().item())
        if config.early_stop_patience:
            best, since = (curves["val_loss"][-1], 0) if curves["val_loss"][-1] < best else (best, since + 1)
            if since >= config.early_stop_patience:
                break
    return model, curves


def full_batch(**kwargs) -> TrialConfig:
    """No randomness after initialization: one batch of all rows, no dropout, no noise."""
    return TrialConfig(**{"batch_size": 4096, "dropout": 0.0, **kwargs})


MIXED = [  # depths 0-3, widths, batch norm on/off and every other per-member field
    full_batch(n_layers=2, width=48, batch_norm=True, epochs=12, lr=3e-3),
    full_batch(n_layers=1, width=96, batch_norm=False, epochs=8, lr=1e-2, weight_decay=1e-2,
               label_smoothing=0.1),
    full_batch(n_layers=3, width=16, batch_norm=True, epochs=10, lr=2e-3, lr_schedule="onecycle"),
    full_batch(n_layers=0, width=16, epochs=9, lr=1e-2, lr_schedule="cosine"),
    full_batch(n_layers=2, width=32, batch_norm=False, epochs=30, lr=0.3, early_stop_patience=2),
]


@pytest.mark.parametrize("device", DEVICES)
def test_members_compute_what_a_model_trained_alone_computes(data, device):
    """Same seed, same initial weights; without sampling noise the curves must agree to
    float rounding. (Validation loss of batch-norm members wobbles a little more: the
    Linear bias before batch norm gets a zero gradient up to rounding, which Adam scales
    to full steps, and the running mean follows that bias.) `to_module` hands back each
    member as the plain model, scoring what the population measured."""
    trained = train_population(MIXED, [data] * len(MIXED), list(range(len(MIXED))), device=device)
    X_val = torch.as_tensor(data.X_val, device=device)
    for seed, (config, (model, pop)) in enumerate(zip(MIXED, trained)):
        reference, single = reference_train(config, data, device=device, seed=seed)
        assert pop.epochs_run == len(single["train_loss"]), config
        np.testing.assert_allclose(pop.train_loss, single["train_loss"], atol=1e-4)
        np.testing.assert_allclose(pop.val_loss, single["val_loss"], atol=1e-2 if config.batch_norm else 1e-4)
        assert pop.n_params == count_parameters(reference) == count_parameters(model)
        assert type(model) is nn.Sequential and not model.training
        with torch.no_grad():
            accuracy = (model(X_val).argmax(1).cpu().numpy() == data.y_val).mean()
        assert accuracy == pytest.approx(pop.val_accuracy[-1], abs=1e-6)
    assert trained[4][1].early_stopped and trained[4][1].epochs_run < 30


def test_zero_padded_units_stay_zero(data):
    """A narrow member padded to a wide one: its padding is still exactly zero after
    training, so it computes what its own MLP would."""
    pop = Population()
    narrow = pop.add(full_batch(n_layers=2, width=8, epochs=4, weight_decay=0.1), data, seed=0)
    pop.add(full_batch(n_layers=2, width=40, epochs=6), data, seed=1)
    for _ in range(3):
        pop.run_epoch()
    packed = pop._packed
    k = packed.members.index(next(m for m in packed.members if m.id == narrow))
    for layer in packed.hidden:
        assert layer.weight[k, :, 8:].abs().max() == 0 and layer.bias[k, :, 8:].abs().max() == 0
    assert packed.hidden[1].weight[k, 8:, :].abs().max() == 0
    assert packed.head.weight[k, 8:, :].abs().max() == 0


def test_train_is_a_population_of_one_and_leaves_torchs_generator_alone(data):
    state = torch.random.get_rng_state()
    config = TrialConfig(n_layers=2, width=16, epochs=3, batch_size=32)
    model, history = train(config, data, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = train_population([config], [data], [4], seed=4)[0]   # what train() runs
    assert history.train_loss == again[1].train_loss
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again[0].state_dict().values()))
    no_val = TrainData(data.X_train, data.y_train, data.n_classes)  # export retraining
    _, retrained = train(config, no_val, seed=4)
    assert retrained.epochs_run == 3 and all(math.isnan(v) for v in retrained.val_accuracy)


def test_schedule_table_is_what_torch_schedulers_give_adamw():
    steps = 57
    schedulers = torch.optim.lr_scheduler
    for name, make in [("onecycle", lambda o: schedulers.OneCycleLR(o, max_lr=0.02, total_steps=steps)),
                       ("cosine", lambda o: schedulers.CosineAnnealingLR(o, T_max=steps))]:
        optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.02)
        scheduler = make(optimizer)
        lrs, betas = [], []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            betas.append(optimizer.param_groups[0]["betas"][0])
            optimizer.step()
            scheduler.step()
        lr, beta1 = schedule_table(TrialConfig(lr=0.02, lr_schedule=name), steps)
        np.testing.assert_allclose(lr, lrs, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(beta1, betas, rtol=1e-9)


def _final(histories):
    return (np.array([h.val_accuracy[-1] for h in histories]),
            np.array([h.train_loss[-1] for h in histories]))


def test_member_accuracy_distribution_matches_a_model_trained_alone(data):
    """With minibatches, dropout and input noise the two trainers draw different random
    numbers, so only the distributions can agree. Over 8 seeds each (same initial weights
    per seed) the means of final validation accuracy and training loss must agree within
    3 standard errors of a difference of two 8-sample means, the standard deviation taken
    from the reference's seeds. The same check rejects a population trained with another
    dropout, so it has the power to fail."""
    config = TrialConfig(n_layers=2, width=32, dropout=0.3, batch_norm=True, lr=3e-3, batch_size=32,
                         epochs=25, input_noise=0.1)
    seeds = list(range(8))
    single = [reference_train(config, data, seed=s)[1] for s in seeds]
    acc = np.array([c["val_accuracy"][-1] for c in single])
    loss = np.array([c["train_loss"][-1] for c in single])
    assert 0.4 < acc.mean() < 0.95, "the problem must be neither trivial nor hopeless"
    tolerance = 3 * np.sqrt(2 / len(seeds))

    def agrees(trained):
        pop_acc, pop_loss = _final([history for _, history in trained])
        return (abs(pop_acc.mean() - acc.mean()) <= tolerance * max(acc.std(ddof=1), 0.01)
                and abs(pop_loss.mean() - loss.mean()) <= tolerance * loss.std(ddof=1))

    assert agrees(train_population([config] * 8, [data] * 8, seeds))
    other = TrialConfig(**{**config.to_dict(), "dropout": 0.0, "input_noise": 0.0})
    assert not agrees(train_population([other] * 8, [data] * 8, seeds))


@pytest.mark.parametrize("device", DEVICES)
def test_pruning_a_member_leaves_the_others_unchanged(data, device):
    """Members shuffle with their own generators, so without dropout/noise a survivor's
    run is the same whether or not another member (here the widest, so the padding
    shrinks too) was taken out early. With dropout the survivors draw other masks from
    the shared generator: different numbers, the same distribution."""
    configs = [TrialConfig(n_layers=d, width=w, dropout=0.0, batch_norm=bn, batch_size=32, epochs=10)
               for d, w, bn in [(2, 32, True), (3, 128, True), (1, 24, False), (2, 40, True)]]
    seeds = [11, 12, 13, 14]
    whole = [h for _, h in train_population(configs, [data] * 4, seeds, device=device)]

    driver = Populations(device=device)   # the driver train_population and the trial loop use
    members = [driver.add(config, data, seed) for config, seed in zip(configs, seeds)]
    histories = {}
    while len(driver):
        for member, result in driver.run_epoch():
            if result.done:
                histories[member] = driver.remove(member)
            elif member == members[1] and result.epoch == 2:   # pruned after its third epoch
                histories[member] = driver.remove(member)
    pruned = [histories[member] for member in members]
    assert pruned[1].pruned and pruned[1].epochs_run == 3
    np.testing.assert_allclose(pruned[1].train_loss, whole[1].train_loss[:3], rtol=1e-5)
    for i in (0, 2, 3):
        assert pruned[i].epochs_run == 10 and not pruned[i].pruned
        np.testing.assert_allclose(pruned[i].train_loss, whole[i].train_loss, rtol=1e-5)
        np.testing.assert_allclose(pruned[i].val_accuracy, whole[i].val_accuracy, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_a_diverging_member_leaves_alone(data, device):
    configs = [TrialConfig(n_layers=3, width=64, batch_norm=False, dropout=0, lr=1e15, weight_decay=0,
                           epochs=6),
               TrialConfig(n_layers=2, width=32, epochs=6)]
    pop = Population(device=device, seed=0)
    bad, good = (pop.add(c, data, seed=1) for c in configs)
    assert pop.to_module(good)[1].weight.device.type == device
    done = {}
    while len(pop):
        done.update({r.member: r.history for r in pop.run_epoch() if r.done})
    assert "training loss became nan" in done[bad].diverged
    assert done[good].epochs_run == 6 and np.isfinite(done[good].train_loss).all()
    assert not done[good].diverged


def test_members_must_share_rows_and_batch_size(data):
    pop = Population()
    pop.add(TrialConfig(batch_size=32), data, seed=0)
    with pytest.raises(ValueError, match="does not match"):
        pop.add(TrialConfig(batch_size=64), data, seed=0)
    with pytest.raises(ValueError, match="does not match"):   # no validation rows
        pop.add(TrialConfig(batch_size=32), TrainData(data.X_train, data.y_train, data.n_classes), seed=0)


def test_an_epoch_past_the_deadline_is_given_up_once_every_member_has_a_score(data):
    """Past `until` an epoch is given up between batches (at a million rows one epoch took
    seconds past --timeout), but never a member's first: a deadline leaves each a score."""
    pop = Population()
    config = TrialConfig(n_layers=1, width=8, epochs=5, batch_size=16)
    first = pop.add(config, data, seed=0)
    assert [(r.member, r.epoch) for r in pop.run_epoch(until=0.0)] == [(first, 0)]
    assert pop.run_epoch(until=0.0) == []   # given up: nothing recorded, no epoch counted
    second = pop.add(config, data, seed=1)   # a newcomer's first epoch runs out, with the others'
    assert sorted((r.member, r.epoch) for r in pop.run_epoch(until=0.0)) == [(first, 1), (second, 0)]
    assert sorted((r.member, r.epoch) for r in pop.run_epoch()) == [(first, 2), (second, 1)]
    driver = Populations()
    driver.add(config, data, seed=0)
    assert len(driver.run_epoch(until=0.0)) == 1 and driver.run_epoch(until=0.0) == []


def test_an_epoch_is_given_up_between_two_batches_when_the_deadline_passes(data, monkeypatch):
    """The deadline is read before every batch: here a clock that ticks once per reading
    passes it before the third batch, and the epoch ends there with nothing recorded."""
    import time
    import types

    import gsearch.models.population as population

    pop = Population()
    member = pop.add(TrialConfig(n_layers=1, width=8, epochs=5, batch_size=16), data, seed=0)
    pop.run_epoch()
    readings = []

    def monotonic():
        readings.append(1)
        return float(len(readings))

    monkeypatch.setattr(population, "time", types.SimpleNamespace(monotonic=monotonic,
                                                                   perf_counter=time.perf_counter))
    assert len(batch_starts(len(data.y_train), 16)) > 3
    assert pop.run_epoch(until=4.0) == []   # readings 1 (the epoch), 2 and 3 (batches), 4: past
    assert len(readings) == 4
    monkeypatch.undo()
    assert [(r.member, r.epoch) for r in pop.run_epoch()] == [(member, 1)]
