"""Does `torch.compile` pay for the population step? Eager against compiled, one population shape.

A population of K members (the default search's population size, 4) trains on the bundled
GTZAN split (640 train / 160 validation rows). The script times epochs of the eager step,
then compiles the batched forward pass (`models._packed._Packed.forward`; its backward is
compiled with it by AOTAutograd) and times the first compiled epoch (the compile) and the
epochs after it, then eager epochs again, so that the machine's load hits both alike.

The compiled forward draws its dropout masks from torch's global generator: dynamo cannot
trace the population's own `torch.Generator` (a graph break that falls back to eager), so a
compiled step would first need its masks drawn outside the graph. The figures are for the
speed of the step only; gsearch's training stays eager. Inductor's on-disk caches are off
(TORCHINDUCTOR_FORCE_DISABLE_CACHES=1, unless set), so the compile is timed as a fresh
machine pays it.

Usage: python bench/bench_compile.py [--members 4] [--width 160] [--layers 2] [--epochs 20]
       [--dynamic] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")   # before torch is imported

import numpy as np
import torch

from gsearch.data.load import BUNDLED_DATA, load_dataset
from gsearch.models import _packed as pop_module
from gsearch.models.config import TrialConfig
from gsearch.models.population import Population
from gsearch.search.protocol import Protocol


def epochs_ms(pop: Population, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        pop.run_epoch()
        times.append(1000 * (time.perf_counter() - t))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs per phase")
    parser.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(BUNDLED_DATA)
    protocol = Protocol()
    [data] = protocol.trial_data(ds, protocol.split(ds))   # what a trial trains on
    config = TrialConfig(n_layers=args.layers, width=args.width, batch_norm=True, dropout=0.3,
                         lr=3e-3, lr_schedule="onecycle", batch_size=32, epochs=10 * args.epochs,
                         weight_decay=1e-3, label_smoothing=0.1, input_noise=0.1)
    pop = Population(device=args.device, seed=0)
    for seed in range(args.members):
        pop.add(config, data, seed)
    epochs_ms(pop, 2)   # warm-up
    eager = epochs_ms(pop, args.epochs)

    eager_forward = pop_module._Packed.forward
    compiled = torch.compile(eager_forward, dynamic=args.dynamic)

    def forward(self, x, train, generator):
        return compiled(self, x, train, None) if train else eager_forward(self, x, train, generator)

    pop_module._Packed.forward = forward
    try:
        first = epochs_ms(pop, 1)[0]
        after = epochs_ms(pop, args.epochs)
    except Exception as e:   # e.g. dynamic=True on torch 2.13: a fake-tensor error while tracing
        raise SystemExit(f"torch.compile(dynamic={args.dynamic}) failed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}")
    pop_module._Packed.forward = eager_forward
    again = epochs_ms(pop, args.epochs)

    k = args.members
    print(f"population of {k} x {args.layers} x {args.width}, batch {config.batch_size}, "
          f"{len(data.X_train)} rows, "
          f"device {args.device}, torch {torch.__version__}")
    print(f"eager:    {np.median(eager):.1f} ms per epoch ({np.median(eager) / k:.1f} per trial-epoch); "
          f"again after the compiled phase: {np.median(again):.1f} ms")
    print(f"compiled: first epoch {first / 1000:.1f} s (the compile), then "
          f"{np.median(after):.1f} ms per epoch ({np.median(after) / k:.1f} per trial-epoch)")
    saved = (np.median(eager) + np.median(again)) / 2 - np.median(after)
    if saved > 0:
        print(f"break-even after {first / saved:.0f} epochs of this one shape")
    else:
        print("the compiled step is not faster: it never pays back its compile")


if __name__ == "__main__":
    main()
