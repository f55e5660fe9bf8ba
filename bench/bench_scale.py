"""How a search's time grows with the table: `gsearch run --trials 200` on generated tables.

For each size, writes a table of scikit-learn's `make_classification` (40 numeric features, 20
informative, 10 classes, a `label` column) to a temporary folder and times the real command,
`gsearch run --data TABLE --trials N --seed 0` in a fresh process (one torch thread, a fresh
SQLite file), from its start to its exit. Prints per size: rows, the search space the table was
given (batch sizes and epochs follow the rows: gsearch.search.space.SearchSpace), wall seconds,
CPU seconds of the command (user + system: what the search cost, less sensitive than wall time
to other work on the machine), CPU seconds per 1,000 rows, trials complete/pruned, the best validation accuracy, and for reference
scikit-learn's HistGradientBoostingClassifier on the same validation split.

Usage: python bench/bench_scale.py [--rows 1000,10000,100000] [--trials 200] [--classes 10]
"""
import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification


def table(rows: int, classes: int, path: Path) -> None:
    X, y = make_classification(n_samples=rows, n_features=40, n_informative=20, n_redundant=10,
                               n_classes=classes, n_clusters_per_class=2, class_sep=1.0,
                               flip_y=0.02, random_state=0)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i}" for i in range(X.shape[1])])
    frame["label"] = [f"class{c}" for c in y]
    frame.to_csv(path, index=False)


def histgb_validation(path: Path) -> float:
    """HistGradientBoosting trained on the search's train split, scored on its validation split."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from gsearch.data.load import load_dataset
    from gsearch.search.protocol import Protocol

    ds = load_dataset(path)
    split = Protocol().split(ds)
    model = HistGradientBoostingClassifier(random_state=0).fit(ds.X[split.train], ds.y[split.train])
    return float((model.predict(ds.X[split.val]) == ds.y[split.val]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000,10000,100000")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; --trials {args.trials}, {args.classes} classes")
    print(f"{'rows':>8} {'space':<46} {'wall s':>7} {'CPU s':>7} {'CPU s/1k rows':>13} "
          f"{'complete/pruned':>15} {'best val':>8} {'HistGB val':>10}")
    env = dict(os.environ, TQDM_DISABLE="1")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in map(int, args.rows.split(",")):
            path = Path(tmp) / f"table{rows}.csv"
            table(rows, args.classes, path)
            command = [sys.executable, "-m", "gsearch", "run", "--data", str(path), "--trials",
                       str(args.trials), "--seed", "0", "--threads", "1", "--study", f"s{rows}",
                       "--storage", f"sqlite:///{tmp}/studies{rows}.db"]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if done.returncode:
                sys.exit(f"{rows} rows: gsearch run exited {done.returncode}: {done.stderr[-500:]}")
            out = done.stdout
            space = re.search(r"search space: sized to [\d,]+ training rows: (.*)", out)
            counts = re.search(r"(\d+) complete, (\d+) pruned", out)
            best = re.search(r"best trial #\d+: validation accuracy ([\d.]+)", out)
            print(f"{rows:>8} {space.group(1) if space else 'batch size 32/64/128, 20-100 epochs':<46} "
                  f"{seconds:>7.1f} {cpu:>7.1f} {cpu / rows * 1000:>13.2f} "
                  f"{counts.group(1) + '/' + counts.group(2) if counts else '?':>15} "
                  f"{best.group(1) if best else '?':>8} {histgb_validation(path):>10.3f}", flush=True)


if __name__ == "__main__":
    main()
