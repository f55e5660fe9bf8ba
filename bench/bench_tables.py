"""gsearch's default export against the baselines a user would pick instead, on real tables.

Runs the real command `gsearch evaluate --trials N` (a search on train+validation per split,
the default top-5 export scored on the untouched test split, next to an RBF-SVM, logistic
regression and HistGradientBoosting tuned on the same rows) on each table, each in its own
folder and storage, and prints evaluate's table, then one line per table: the export's mean
test accuracy over the splits against the best baseline's mean.

Tables:
  gtzan         the bundled GTZAN features_30_sec.csv, split by track, split seeds 42,0,1
  gtzan-artist  the same, GTZAN's published artist-filtered folds 1,2,3 (--groups artist)
  wine          scikit-learn's wine measurements (178 rows, 13 features, 3 cultivars)
  cancer        scikit-learn's breast-cancer table (569 rows, 30 features, 2 classes)
  digits        scikit-learn's 8x8 digits (1,797 rows, 64 features, 10 classes)

Usage: python bench/bench_tables.py [--tables gtzan,gtzan-artist,wine,cancer] [--trials 200]
       [--split-seeds 42,0,1] [--out DIR (kept; default a temporary folder)] [-- EXTRA evaluate options]
"""
import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sklearn_table(name: str, path: Path) -> list[str]:
    """Write one of scikit-learn's bundled tables as a CSV; the evaluate options it needs."""
    from sklearn import datasets

    loader = {"wine": datasets.load_wine, "cancer": datasets.load_breast_cancer,
              "digits": datasets.load_digits}[name]
    bunch = loader(as_frame=True)
    frame = bunch.data.copy()
    names = getattr(bunch, "target_names", None)
    frame["target_class"] = [str(names[t]) if names is not None else str(t) for t in bunch.target]
    frame.to_csv(path, index=False)
    return ["--data", str(path), "--label", "target_class"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="gtzan,gtzan-artist,wine,cancer")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--split-seeds", default="42,0,1")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("extra", nargs="*", help="more options for gsearch evaluate")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; gsearch evaluate --trials {args.trials}")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for table in args.tables.split(","):
            folder = root / table
            folder.mkdir(parents=True, exist_ok=True)
            if table == "gtzan":
                options = ["--split-seeds", args.split_seeds]
            elif table == "gtzan-artist":
                options = ["--groups", "artist", "--test-folds", "1,2,3"]
            else:
                options = sklearn_table(table, folder / f"{table}.csv") + ["--split-seeds", args.split_seeds]
            command = [sys.executable, "-m", "gsearch", "evaluate", "--trials", str(args.trials),
                       "--storage", f"sqlite:///{folder / 'evaluate.db'}", "--out",
                       str(folder / "models"), *options, *args.extra]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True,
                                  env=dict(os.environ, TQDM_DISABLE="1"))
            seconds = time.perf_counter() - started
            print(f"\n## {table}: {' '.join(command[2:])}  ({seconds:.0f} s)")
            if done.returncode:
                sys.exit(f"{table}: exited {done.returncode}: {done.stderr.strip()[-800:]}")
            lines = [line for line in done.stdout.splitlines() if " | " in line or line.startswith("-")]
            print("\n".join(lines))
            head = next(line for line in lines if "acc / F1" in line)
            means = next(line for line in lines if "mean ± std test accuracy" in line)
            models = [re.sub(r" acc / F1$", "", cell.strip()) for cell in head.split(" | ")[1:]]
            values = [float(cell.split("±")[0]) for cell in means.split(" | ")[1:]]
            scores = dict(zip(models, values))
            ours = next(v for m, v in scores.items() if m.startswith("MLP top-"))
            rival = max((m for m in scores if not m.startswith("MLP")), key=scores.get)
            verdicts.append(f"{table:<13} MLP export {ours:.3f}  best baseline {rival} "
                            f"{scores[rival]:.3f}  difference {100 * (ours - scores[rival]):+.1f} points")
    print("\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()
