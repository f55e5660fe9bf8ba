"""Population size: milliseconds per trial-epoch when K trials train at once as one batched
model (`--population K`), on the CPU or a GPU.

For each K of --populations: K members of one configuration (--layers hidden layers of
--width units, batch norm, dropout 0.2, batch --batch-size; the middle of the default search
space), each with its own seed, trained together for --epochs epochs by the one trainer
(`train_population`, as the trial loop drives it) on the split the search uses (split seed 42,
validation every epoch). One untimed warm-up population of the same K first (CUDA context,
kernels, allocator), then --repeats timed ones; the best repeat is printed. On CUDA the clock
stops after torch.cuda.synchronize().

Prints, per K: wall seconds of one population, ms per population-epoch, ms per trial-epoch
(the figure of docs/benchmarks.md, "Population size") and its speed-up over the first K.

Usage: python bench/bench_population.py [--device cpu|cuda] [--populations 1,4,16,64,256]
       [--epochs 20] [--width 128] [--layers 2] [--batch-size 64] [--threads 1] [--repeats 2]
       [--data CSV] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gsearch.data.load import BUNDLED_DATA, load_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.population import resolve_device, train_population
from gsearch.search.protocol import Protocol


def timed_population(config: TrialConfig, data, k: int, device: torch.device) -> float:
    """Wall seconds to train K members of `config` to the end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    trained = train_population([config] * k, [data] * k, list(range(k)), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    assert all(h.epochs_run == config.epochs for _, h in trained), "a member stopped early"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (as gsearch --device)")
    parser.add_argument("--populations", default="1,4,16,64,256", help="the K to measure")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="timed populations per K (best kept)")
    parser.add_argument("--data", type=Path, default=BUNDLED_DATA)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ks = [int(k) for k in args.populations.split(",")]

    ds = load_dataset(args.data)
    data = Protocol(split_seed=42).trial_data(ds)[0]
    config = TrialConfig(n_layers=args.layers, width=args.width, batch_norm=True, dropout=0.2, lr=1e-3,
                         epochs=args.epochs, batch_size=args.batch_size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{args.threads} CPU thread(s); {len(data.X_train)} train / {data.n_val} validation rows; "
          f"{args.layers} x {args.width}, batch {args.batch_size}, {args.epochs} epochs; "
          f"best of {args.repeats}", flush=True)
    print(f"{'K':>5} {'s per population':>17} {'ms per pop-epoch':>17} {'ms per trial-epoch':>19} "
          f"{'speed-up':>9}", flush=True)
    rows, base = [], None
    for k in ks:
        timed_population(config, data, k, device)   # warm-up
        seconds = min(timed_population(config, data, k, device) for _ in range(args.repeats))
        per_trial = seconds / args.epochs / k * 1e3
        base = base or per_trial   # the first K's figure
        rows.append({"K": k, "seconds": seconds, "ms_per_population_epoch": seconds / args.epochs * 1e3,
                     "ms_per_trial_epoch": per_trial})
        print(f"{k:>5} {seconds:>17.3f} {seconds / args.epochs * 1e3:>17.1f} {per_trial:>19.2f} "
              f"{base / per_trial:>8.1f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "device_name": name,
                                         "torch": torch.__version__, "cuda": torch.version.cuda,
                                         "config": config.to_dict(), "epochs": args.epochs,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
