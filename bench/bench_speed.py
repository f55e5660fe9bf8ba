"""gsearch's search speed against the loop a user would otherwise write.

In one run, on one data file and one split (64/16/20 by track, split seed 42):

(a) the fixed configuration (3 x 256, batch norm, dropout 0.3, Adam lr 1e-3, 100 epochs,
    batch 64) trained by Optuna's PyTorch example shape (a DataLoader over a TensorDataset,
    evaluation every epoch) and by gsearch's trainer: as configured, with early stopping
    (patience 10 epochs on validation loss), and as a population of --repeats seeds at
    once. Mean seconds and test accuracy over --repeats seeds.
(b) a reference study (that loop as the objective, TPE, MedianPruner, in-memory storage,
    one process; depth 1-4, width 16-512, dropout 0-0.6, batch norm, lr 1e-4..1e-1,
    epochs 20-200, batch 64) and `gsearch run` with default settings (the real CLI, a
    fresh SQLite file; its own default space, search/space.py: depth 1-3, width 32-256 on a
    log scale, epochs 20-100 in steps of 10, lr 1e-4..3e-2 with a schedule, weight decay,
    label smoothing, input noise, batch 32-128), both with --trials trials.
    The best trial of each is retrained on train+validation with its own trainer
    (--repeats seeds, a single model each) and scored on the untouched test split.
    For both studies it also prints the epochs trained and their arithmetic floor: the
    matmul FLOPs of those epochs at this machine's one-core float32 matmul rate.
(c) where the time of one epoch goes: seconds per member-epoch of `train` and of populations
    of 1, 4 and 16 members for 3 hidden layers of each of --widths, next to the floor.

Usage: python bench/bench_speed.py [--trials 200] [--repeats 3] [--data CSV] [--skip-study]
       [--widths 64,256,1024]
Timings are wall-clock seconds; run it on a quiet machine for absolute figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsearch.data.load import load_dataset
from gsearch.data.split import fit_scaler, split_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.population import TrainData, train, train_population
from gsearch.search.export import trial_config

REAL_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan" / "features_30_sec.csv"
FIXED = dict(n_layers=3, width=256, dropout=0.3, batch_norm=True, lr=1e-3, epochs=100, batch_size=64)


# -- the reference: Optuna's PyTorch example shape -------------------------------------------

def reference_train(params: dict, X, y, X_val, y_val, seed: int, on_epoch=None):
    """DataLoader over a TensorDataset, Adam, evaluation every epoch; returns (model, val acc)."""
    torch.manual_seed(seed)
    mean, std = fit_scaler(X)

    def loader(A, b, shuffle):
        A = torch.tensor((A - mean) / std, dtype=torch.float32)
        return DataLoader(TensorDataset(A, torch.tensor(b)), batch_size=params["batch_size"], shuffle=shuffle)

    layers, width_in = [], X.shape[1]
    for _ in range(params["n_layers"]):
        layers += [nn.Linear(width_in, params["width"])]
        layers += [nn.BatchNorm1d(params["width"])] if params["batch_norm"] else []
        layers += [nn.ReLU(), nn.Dropout(params["dropout"])]
        width_in = params["width"]
    model = nn.Sequential(*layers, nn.Linear(width_in, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
    train_loader, val_loader = loader(X, y, True), loader(X_val, y_val, False)
    accuracy = 0.0
    for epoch in range(params["epochs"]):
        model.train()
        for xb, yb in train_loader:
            if len(xb) < 2:
                continue
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in val_loader:
                correct += (model(xb).argmax(dim=1) == yb).sum().item()
        accuracy = correct / len(val_loader.dataset)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
    model.scaler = (mean, std)
    return model, accuracy


def reference_test_accuracy(model, X_test, y_test) -> float:
    mean, std = model.scaler
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor((X_test - mean) / std, dtype=torch.float32))
    return float((logits.argmax(dim=1).numpy() == y_test).mean())


def reference_params(trial) -> dict:
    """The reference's search space: depth 1-4, width 16-512, dropout, batch norm, lr, epochs."""
    return dict(n_layers=trial.suggest_int("n_layers", 1, 4),
                width=trial.suggest_int("width", 16, 512, log=True),
                dropout=trial.suggest_float("dropout", 0.0, 0.6),
                batch_norm=trial.suggest_categorical("batch_norm", [True, False]),
                lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True),
                epochs=trial.suggest_int("epochs", 20, 200, step=10), batch_size=64)


def reference_study(trials: int, seed: int, X, y, X_val, y_val) -> optuna.Study:
    def objective(trial):
        params = reference_params(trial)

        def on_epoch(epoch, accuracy):
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return reference_train(params, X, y, X_val, y_val, seed + trial.number, on_epoch)[1]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=trials)
    return study


# -- gsearch ----------------------------------------------------------------------------------

def gsearch_test_accuracy(model, X_test, y_test) -> float:
    with torch.inference_mode():
        logits = model(torch.as_tensor(X_test))
    return float((logits.argmax(dim=1).numpy() == y_test).mean())


def gsearch_run(csv: Path, trials: int, seed: int, threads: int) -> tuple[float, optuna.Study]:
    """`gsearch run` with default settings in a fresh process and a fresh SQLite file."""
    folder = tempfile.mkdtemp(prefix="bench_speed_")
    storage = f"sqlite:///{folder}/studies.db"
    cmd = [sys.executable, "-m", "gsearch", "run", "--data", str(csv), "--trials", str(trials),
           "--storage", storage, "--study", "bench", "--seed", str(seed), "--device", "cpu",
           "--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TQDM_DISABLE="1"))
    seconds = time.perf_counter() - t0
    return seconds, optuna.load_study(study_name="bench", storage=storage)


# -- the arithmetic floor ---------------------------------------------------------------------

def matmul_rate() -> float:
    """FLOP/s of a large float32 matmul on the current torch threads."""
    a = torch.randn(2048, 2048)
    a @ a
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    return 2 * 2048 ** 3 * 10 / (time.perf_counter() - t0)


def epoch_flops(n_layers: int, width: int, n_features: int, n_classes: int, n_train: int, n_val: int) -> float:
    """Matmul FLOPs of one epoch: forward and backward (3 matmuls) on the training rows,
    forward on the validation rows; elementwise work and the optimizer are left out."""
    sizes = [n_features] + [width] * n_layers + [n_classes]
    macs = sum(a * b for a, b in zip(sizes, sizes[1:]))
    return 2 * macs * (3 * n_train + n_val)


def study_floor(study: optuna.Study, shape: tuple[int, int, int, int], rate: float) -> tuple[int, float]:
    """(epochs trained, their floor in seconds) over all trials; every epoch is reported."""
    epochs, flops = 0, 0.0
    for t in study.trials:
        n = len(t.intermediate_values)
        epochs += n
        flops += n * epoch_flops(t.params["n_layers"], t.params["width"], *shape)
    return epochs, flops / rate


def where_time_goes(data: TrainData, widths: list[int], rate: float, epochs: int = 30) -> None:
    shape = (data.X_train.shape[1], data.n_classes, len(data.X_train), len(data.X_val))
    print(f"\n(c) milliseconds per member-epoch, 3 hidden layers, batch 64 ({epochs} epochs; "
          f"one-core matmul {rate / 1e9:.0f} GFLOP/s)")
    print(f"  {'width':>6} {'floor':>7} {'train()':>8} {'pop 1':>7} {'pop 4':>7} {'pop 16':>7}")
    for width in widths:
        config = TrialConfig(n_layers=3, width=width, dropout=0.3, batch_norm=True, lr=1e-3,
                             epochs=epochs, batch_size=64)
        floor = epoch_flops(3, width, *shape) / rate * 1e3
        train(config, data)   # warm-up
        t0 = time.perf_counter()
        train(config, data)
        single = (time.perf_counter() - t0) / epochs * 1e3
        populations = []
        for k in (1, 4, 16):
            t0 = time.perf_counter()
            train_population([config] * k, [data] * k, list(range(k)))
            populations.append((time.perf_counter() - t0) / epochs / k * 1e3)
        print(f"  {width:>6} {floor:>7.1f} {single:>8.1f}" + "".join(f" {c:>7.1f}" for c in populations))


# -- the benchmark ----------------------------------------------------------------------------

def row(name: str, seconds: float, accuracy: list[float], base: float | None = None) -> str:
    speedup = "" if base is None else f"{base / seconds:7.1f}x"
    acc = f"{np.mean(accuracy):.3f} +/- {np.std(accuracy):.3f}" if len(accuracy) > 1 else f"{accuracy[0]:.3f}"
    return f"  {name:<48} {seconds:9.2f} s {speedup:>8}   test accuracy {acc}"


def counts(study: optuna.Study) -> str:
    states = [t.state for t in study.trials]
    return (f"{states.count(optuna.trial.TrialState.COMPLETE)} complete, "
            f"{states.count(optuna.trial.TrialState.PRUNED)} pruned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_CSV)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="seeds per fixed-config trainer and retrain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every contender")
    parser.add_argument("--skip-study", action="store_true", help="skip (b), the studies")
    parser.add_argument("--widths", default="64,256,1024", help="widths for (c); empty to skip it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    ds = load_dataset(args.data)
    split = split_dataset(ds, test_size=0.2, val_size=0.2, seed=42)
    X, y, X_val, y_val = ds.X[split.train], ds.y[split.train], ds.X[split.val], ds.y[split.val]
    X_test, y_test = ds.X[split.test], ds.y[split.test]
    print(f"{args.data.name}: {len(split.train)} train / {len(split.val)} validation / "
          f"{len(split.test)} test rows; torch threads {args.threads}; {args.repeats} seeds")

    print("\n(a) fixed configuration: 3 x 256, batch norm, dropout 0.3, Adam lr 1e-3, 100 epochs, batch 64")
    seeds = list(range(args.seed, args.seed + args.repeats))
    config = TrialConfig(**FIXED, weight_decay=0.0)   # AdamW without decay is Adam
    data = TrainData(X, y, len(ds.classes), X_val, y_val)
    stopping = TrialConfig(**{**config.to_dict(), "early_stop_patience": 10})
    ref_t, ref_acc, gs_t, gs_acc, es_t, es_acc, es_epochs = [], [], [], [], [], [], []
    for s in seeds:   # interleaved, so machine load hits all alike
        t0 = time.perf_counter()
        model, _ = reference_train(FIXED, X, y, X_val, y_val, s)
        ref_t.append(time.perf_counter() - t0)
        ref_acc.append(reference_test_accuracy(model, X_test, y_test))
        t0 = time.perf_counter()
        model, _ = train(config, data, seed=s)
        gs_t.append(time.perf_counter() - t0)
        gs_acc.append(gsearch_test_accuracy(model, X_test, y_test))
        t0 = time.perf_counter()
        model, history = train(stopping, data, seed=s)
        es_t.append(time.perf_counter() - t0)
        es_acc.append(gsearch_test_accuracy(model, X_test, y_test))
        es_epochs.append(history.epochs_run)
    t0 = time.perf_counter()
    histories = [h for _, h in train_population([config] * len(seeds), [data] * len(seeds), seeds)]
    pop_t = (time.perf_counter() - t0) / len(seeds)
    pop_val = [h.val_accuracy[-1] for h in histories]
    print(row("DataLoader loop (Optuna example shape)", np.mean(ref_t), ref_acc))
    print(row("gsearch train()", np.mean(gs_t), gs_acc, np.mean(ref_t)))
    print(row(f"gsearch train(), early stop (ran {np.mean(es_epochs):.0f} epochs)", np.mean(es_t), es_acc,
              np.mean(ref_t)))
    print(f"  {'gsearch population of ' + str(len(seeds)) + ' seeds, per model':<48} {pop_t:9.2f} s "
          f"{np.mean(ref_t) / pop_t:7.1f}x   (validation accuracy {np.mean(pop_val):.3f})")
    if args.skip_study and not args.widths:
        return
    rate = matmul_rate()
    if not args.skip_study:
        studies(args, ds, split, data, seeds, rate)
    if args.widths:
        where_time_goes(data, [int(w) for w in args.widths.split(",")], rate)


def studies(args, ds, split, data: TrainData, seeds: list[int], rate: float) -> None:
    """(b): `data` holds the train and validation rows of `split`."""
    X, y, X_val, y_val = data.X_train, data.y_train, data.X_val, data.y_val
    X_test, y_test = ds.X[split.test], ds.y[split.test]
    rows_all = split.train_val
    print(f"\n(b) {args.trials}-trial study over depth 1-4, width 16-512, dropout 0-0.6, batch norm, "
          "lr 1e-4..1e-1, epochs 20-200")
    t0 = time.perf_counter()
    ref_study = reference_study(args.trials, args.seed, X, y, X_val, y_val)
    ref_seconds = time.perf_counter() - t0
    print(f"  reference study finished in {ref_seconds:.0f} s ({counts(ref_study)}); now gsearch run", flush=True)
    gs_seconds, gs_study = gsearch_run(args.data, args.trials, args.seed, args.threads)

    ref_best, gs_best = ref_study.best_trial, gs_study.best_trial
    ref_params = {**ref_best.params, "batch_size": 64}
    gs_config = trial_config(gs_best)
    all_data = TrainData(ds.X[rows_all], ds.y[rows_all], len(ds.classes))
    ref_test, gs_test = [], []
    for s in seeds:   # retrain on train+validation as export-best does, score on test
        model, _ = reference_train(ref_params, ds.X[rows_all], ds.y[rows_all], X_val, y_val, s)
        ref_test.append(reference_test_accuracy(model, X_test, y_test))
        model, _ = train(gs_config, all_data, seed=s)
        gs_test.append(gsearch_test_accuracy(model, X_test, y_test))
    print(row(f"reference study ({counts(ref_study)})", ref_seconds, ref_test))
    print(row(f"gsearch run ({counts(gs_study)})", gs_seconds, gs_test, ref_seconds))
    print(f"  best validation accuracy: reference {ref_best.value:.4f} (trial #{ref_best.number}), "
          f"gsearch {gs_best.value:.4f} (trial #{gs_best.number})")
    print(f"  reference best: {_params(ref_best.params)}")
    print(f"  gsearch best:   {_params(gs_best.params)}")
    shape = (X.shape[1], len(ds.classes), len(X), len(X_val))
    for name, study, seconds in (("reference", ref_study, ref_seconds), ("gsearch run", gs_study, gs_seconds)):
        epochs, floor = study_floor(study, shape, rate)
        print(f"  {name}: {epochs} epochs trained, {floor:.1f} s of matmul arithmetic at one core's "
              f"{rate / 1e9:.0f} GFLOP/s (its wall time is {seconds / floor:.1f}x that)")


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


if __name__ == "__main__":
    main()
