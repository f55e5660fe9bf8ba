"""Anytime speed: how good a model a user holds after a given wait, gsearch against the
hand-written loop in the shape of Optuna's PyTorch example.

For each system, search budget B (seconds of search wall time) and split seed: search for B
seconds, then retrain the pick on train+validation and score it on that seed's untouched test
split. What the user waits is the x-axis: wall seconds from the command's start to an exported
model, process start-up included.

- gsearch: `gsearch run --timeout B` then `gsearch export-best`, defaults otherwise, each a new
  process as a user runs them (the wait is the sum of both).
- gsearch-export: one command, `gsearch run --timeout B --export DIR` (search and export in one
  process: one start-up, the data read once); its "export s" is the export's retraining time
  (model.json's train_seconds), its "search s" the rest of the wait.
- reference: a new process running a DataLoader loop (bench_speed.reference_train) under
  study.optimize(timeout=B) with TPE and MedianPruner() defaults (as Optuna's example), or with
  MedianPruner(n_warmup_steps=10); then its best trial retrained on train+validation.

Prints a table (mean test accuracy ± std over split seeds, trials, epochs trained, search,
export and total seconds), then each run's test accuracy and wait by split seed with the
longest wait and the machine's load average (1 min, at each run's start), and draws test
accuracy against the wait (log scale) into --plot.
Where no trial completed before the deadline, gsearch exports the trials the deadline
stopped (model.json's pick starts with "deadline"): the per-seed lines mark such a model
"(stopped)". A run that delivers no model is counted as such and left out of the means.

`--busy N` runs N busy loops (one process each) beside every run: a controlled load, as on a
user's busy laptop (issue 35: at --busy 2 and 4 on 2 cores, the model within 2x the quiet
wait and 2 points of the quiet accuracy).

`--device cuda` runs both gsearch commands on the GPU (default cpu, as every published figure);
the reference systems stay on the CPU.

Usage: python bench/bench_anytime.py [--budgets 30,60,120,300] [--split-seeds 42,0,1]
       [--systems gsearch,reference,reference-warmup10] [--data CSV] [--plot docs/anytime.png]
       [--device cpu|cuda|auto] [--repeats N] [--busy N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SYSTEMS = ("gsearch", "gsearch-export", "reference", "reference-warmup10")


def gsearch_cmd() -> list[str]:
    script = Path(sys.executable).with_name("gsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gsearch"]


def run_gsearch(data: Path, budget: float, split_seed: int, threads: int, folder: Path,
                one_command: bool = False, device: str = "cpu") -> dict:
    storage = f"sqlite:///{folder / 'studies.db'}"
    common = ["--storage", storage, "--study", "anytime", "--threads", str(threads), "--device", device]
    env = dict(os.environ, TQDM_DISABLE="1")
    run = [*gsearch_cmd(), "run", "--data", str(data), "--timeout", str(budget),
           "--trials", "100000", "--split-seed", str(split_seed), *common]
    t0 = time.perf_counter()
    if one_command:   # search and export in one process: the export's share is its retraining
        export = subprocess.run([*run, "--export", str(folder / "export")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        t2 = time.perf_counter()
        written = folder / "export" / "model.json"
        t1 = t2 - (json.loads(written.read_text())["train_seconds"] if written.exists() else 0.0)
    else:
        subprocess.run(run, check=True, stdout=subprocess.DEVNULL, env=env)
        t1 = time.perf_counter()
        export = subprocess.run([*gsearch_cmd(), "export-best", "--out", str(folder / "export"), *common],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        t2 = time.perf_counter()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="anytime", storage=storage)
    stopped = False
    if export.returncode:   # e.g. no trial trained an epoch before the deadline: no model
        print(f"  no model: {export.stderr.strip()}", flush=True)
        accuracy = None
    else:
        written = json.loads((folder / "export" / "model.json").read_text())
        accuracy, stopped = written["test_accuracy"], written["pick"].startswith("deadline")
    finished = [t for t in study.trials if t.state.is_finished()]
    return {"test_accuracy": accuracy, "stopped": stopped, "trials": len(finished),
            "epochs": sum(len(t.intermediate_values) for t in study.trials),
            "search_s": t1 - t0, "export_s": t2 - t1, "wait_s": t2 - t0}


def reference_child(args) -> None:
    """In a new process: the reference search for `budget` seconds, then its retrained best."""
    t0 = time.perf_counter()
    import optuna
    import torch

    sys.path.insert(0, str(HERE))
    from bench_speed import reference_params, reference_test_accuracy, reference_train

    from gsearch.data.load import load_dataset
    from gsearch.search.protocol import Protocol

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ds = load_dataset(args.data)
    split = Protocol(split_seed=args.split_seed).split(ds)
    X, y, X_val, y_val = ds.X[split.train], ds.y[split.train], ds.X[split.val], ds.y[split.val]
    epochs = []

    def objective(trial):
        params = reference_params(trial)

        def on_epoch(epoch, accuracy):
            epochs.append(1)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return reference_train(params, X, y, X_val, y_val, trial.number, on_epoch)[1]

    pruner = (optuna.pruners.MedianPruner(n_warmup_steps=10) if args.system == "reference-warmup10"
              else optuna.pruners.MedianPruner())
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=args.split_seed))
    study.optimize(objective, timeout=args.budget)
    t1 = time.perf_counter()
    rows = split.train_val
    model, _ = reference_train({**study.best_trial.params, "batch_size": 64}, ds.X[rows], ds.y[rows],
                               X_val, y_val, seed=0)
    accuracy = reference_test_accuracy(model, ds.X[split.test], ds.y[split.test])
    t2 = time.perf_counter()
    print(json.dumps({"test_accuracy": accuracy, "trials": len(study.trials), "epochs": len(epochs),
                      "search_s": t1 - t0, "export_s": t2 - t1}))


def run_reference(system: str, data: Path, budget: float, split_seed: int, threads: int) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", system, "--data", str(data),
                          "--budget", str(budget), "--split-seed", str(split_seed),
                          "--threads", str(threads)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wait_s": time.perf_counter() - t0}


def table(results: dict) -> str:
    lines = [f"{'system':<20} {'budget s':>8} {'test accuracy':>15} {'trials':>7} {'epochs':>7} "
             f"{'search s':>9} {'export s':>9} {'wait s':>7}"]
    for (system, budget), runs in sorted(results.items(), key=lambda kv: (SYSTEMS.index(kv[0][0]), kv[0][1])):
        acc = [r["test_accuracy"] for r in runs if r["test_accuracy"] is not None]

        def mean(key):
            return np.mean([r[key] for r in runs])

        shown = f"{np.mean(acc):>8.3f} ± {np.std(acc):.3f}" if acc else f"{'-':>15}"
        lines.append(f"{system:<20} {budget:>8g} {shown} "
                     f"{mean('trials'):>7.0f} {mean('epochs'):>7.0f} {mean('search_s'):>9.1f} "
                     f"{mean('export_s'):>9.1f} {mean('wait_s'):>7.1f}"
                     + (f"   {len(runs) - len(acc)} of {len(runs)} without a model" if len(acc) < len(runs) else ""))
    return "\n".join(lines)


def per_seed(results: dict) -> str:
    """Each run's test accuracy and wait by split seed, and the longest wait: a wait is a
    promise to every run, not to their mean."""
    lines = []
    for (system, budget), runs in sorted(results.items(), key=lambda kv: (SYSTEMS.index(kv[0][0]), kv[0][1])):
        shown = ", ".join(
            f"{r['split_seed']}: " + ("no model" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}")
            + f" in {r['wait_s']:.1f} s" + (" (stopped)" if r.get("stopped") else "")
            for r in sorted(runs, key=lambda r: r["split_seed"]))
        load = [r["load"] for r in runs if "load" in r]
        lines.append(f"{system} {budget:g} s: {shown}; longest wait {max(r['wait_s'] for r in runs):.1f} s"
                     + (f"; load {min(load):.1f}-{max(load):.1f}" if load else ""))
    return "\n".join(lines)


def plot(results: dict, path: Path, seeds: list[int]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for system in SYSTEMS:
        points = sorted((budget, runs) for (s, budget), runs in results.items() if s == system)
        if not points:
            continue
        points = [(b, [r for r in runs if r["test_accuracy"] is not None]) for b, runs in points]
        points = [(b, runs) for b, runs in points if runs]   # runs that delivered a model
        wait = [np.mean([r["wait_s"] for r in runs]) for _, runs in points]
        acc = [np.mean([r["test_accuracy"] for r in runs]) for _, runs in points]
        std = [np.std([r["test_accuracy"] for r in runs]) for _, runs in points]
        ax.errorbar(wait, acc, yerr=std, marker="o", capsize=3, label=system)
    ax.set_xscale("log")
    ax.set_xlabel("seconds from the command's start to an exported model (log scale)")
    ax.set_ylabel(f"test accuracy, mean ± std over split seeds {', '.join(map(str, seeds))}")
    ax.set_title("Anytime: the model a user holds after a given wait (GTZAN, 1 CPU thread)", loc="left")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_system(system: str, args, budget: float, seed: int, folder: Path) -> dict:
    if system in ("gsearch", "gsearch-export"):
        return run_gsearch(args.data, budget, seed, args.threads, folder,
                           one_command=system == "gsearch-export", device=args.device)
    return run_reference(system, args.data, budget, seed, args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="feature CSV (default: the GTZAN table bundled with gsearch)")
    parser.add_argument("--budgets", default="30,60,120,300")
    parser.add_argument("--split-seeds", default="42,0,1")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each system per budget and split seed (short budgets are noisy)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="--device of both gsearch commands (run and export-best); the reference "
                             "systems always train on the CPU")
    parser.add_argument("--busy", type=int, default=0,
                        help="busy loops (one process each) running beside every run")
    parser.add_argument("--plot", type=Path, default=None, help="PNG to draw (e.g. docs/anytime.png)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the raw results here, after every run")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="run nothing: print the table and draw the plot of these results")
    parser.add_argument("--child", choices=SYSTEMS[2:], help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--split-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data is None:
        from gsearch.data.load import BUNDLED_DATA
        args.data = BUNDLED_DATA
    if args.child:
        args.system = args.child
        reference_child(args)
        return
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.split_seeds.split(",")]
    systems = args.systems.split(",")
    results: dict = {}
    for saved in args.from_json or []:
        for key, runs in json.loads(saved.read_text()).items():
            system, budget = key.split("|")
            results.setdefault((system, float(budget)), []).extend(runs)
    for budget in budgets if args.from_json is None else []:
        for seed in [s for s in seeds for _ in range(args.repeats)]:
            for system in systems:   # interleaved, so machine load hits all alike
                # other processes on the machine, for the record
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(args.busy)]
                with tempfile.TemporaryDirectory() as folder:
                    try:
                        r = run_system(system, args, budget, seed, Path(folder))
                    finally:
                        for process in busy:
                            process.kill()
                            process.wait()
                results.setdefault((system, budget), []).append(
                    {**r, "split_seed": seed, "load": load, "busy": args.busy})
                shown = "no model" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
                print(f"{system} budget {budget:g} s split seed {seed}: test {shown}, "
                      f"{r['trials']} trials, wait {r['wait_s']:.1f} s (load {load:.1f})", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(
                        {f"{s}|{b:g}": runs for (s, b), runs in results.items()}, indent=1))
    print()
    print(table(results))
    print()
    print(per_seed(results))
    if args.plot:
        plot(results, args.plot, seeds)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
