"""Trials per minute of `gsearch run --workers N` for N = 1, 2, 4 on this machine.

Each N runs the real command in a fresh SQLite file, same data, same settings, one after
the other. Trials are made equal in cost by fixing the architecture and the epochs (the
sampler still draws learning rate, dropout, weight decay, batch norm), so the figures
compare the parallel machinery, not the luck of the sampled configurations. Two rates:
"overall" counts the whole command as a user waits for it (imports, worker start, exit);
"trials" counts from the first trial's start to the last trial's end (from the storage).
A CPU control (N processes spinning) shows the speed-up the machine allows at that moment.

    python bench/bench_workers.py                       # real GTZAN file, 24 trials per N
    python bench/bench_workers.py --trials 12 --workers 1,2,4 --data features_30_sec.csv
    python bench/bench_workers.py --storage journal     # the same on a journal file
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan" / "features_30_sec.csv"
FIXED = ["n_layers=2", "width=256", "batch_size=64", "epochs=100"]


def one(data: Path, workers: int, trials: int, fixed: list[str], folder: Path,
        kind: str, population: int | None) -> dict:
    url = (f"sqlite:///{folder / f'bench-{workers}.db'}" if kind == "sqlite"
           else str(folder / f"bench-{workers}.log"))
    command = [sys.executable, "-m", "gsearch", "run", "--data", str(data),
               "--storage", url, "--study", "bench", "--trials", str(trials), "--workers",
               str(workers), "--sampler", "random", "--pruner", "none", "--seed", "0",
               "--device", "cpu"]
    for item in fixed:
        command += ["--fix", item]
    if population is not None:
        command += ["--population", str(population)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    storage = url if kind == "sqlite" else JournalStorage(JournalFileBackend(url))
    trials_done = optuna.load_study(study_name="bench", storage=storage).trials
    first = min(t.datetime_start for t in trials_done)
    last = max(t.datetime_complete for t in trials_done)
    busy = (last - first).total_seconds()
    return {"workers": workers, "trials": len(trials_done), "wall": wall, "busy": busy,
            "overall": 60 * len(trials_done) / wall, "rate": 60 * len(trials_done) / busy}


def _spin(seconds: float, out) -> None:
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    out.put(n)


def cpu_control(processes: int, seconds: float = 3.0) -> float:
    """Pure-Python work done by `processes` busy processes in `seconds`: the speed-up this
    machine can give right now, whatever gsearch does (1.0 when it is saturated)."""
    out = mp.Queue()
    procs = [mp.Process(target=_spin, args=(seconds, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return sum(out.get() for _ in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL)
    parser.add_argument("--trials", type=int, default=24, help="trials per worker count")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite",
                        help="a fresh SQLite file (default) or journal file per run")
    parser.add_argument("--population", type=int, default=None,
                        help="trials each worker trains at once (default: gsearch's default)")
    parser.add_argument("--fix", nargs="*", default=FIXED, metavar="NAME=VALUE",
                        help=f"parameters held fixed (default: {' '.join(FIXED)})")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"no data at {args.data}; pass --data features_30_sec.csv")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    population = "default" if args.population is None else args.population
    print(f"data {args.data}, {args.trials} trials per run, {args.storage} storage, "
          f"population {population}, fixed: {' '.join(args.fix)}")
    print("| workers | trials | wall s | trials/min overall | trials/min while searching "
          "| speed-up | CPU control |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    with tempfile.TemporaryDirectory() as folder:
        for workers in (int(w) for w in args.workers.split(",")):
            r = one(args.data, workers, args.trials, args.fix, Path(folder), args.storage,
                    args.population)
            spin = cpu_control(workers)
            base = base or (r["rate"], spin)
            print(f"| {r['workers']} | {r['trials']} | {r['wall']:.1f} | {r['overall']:.1f} | "
                  f"{r['rate']:.1f} | {r['rate'] / base[0]:.2f}x | {spin / base[1]:.2f}x |",
                  flush=True)
    print("CPU control: pure-Python work of N busy processes relative to one; when it stays "
          "near 1.0x the machine (or this sandbox) is saturated and no worker count can help.")


if __name__ == "__main__":
    main()
