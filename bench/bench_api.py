"""The Python API's goals (issue 34): the estimators inside scikit-learn's cross-validation
against the CLI's export on the same folds, the regressor against RidgeCV, and what `import
gsearch` costs.

--cv: on breast cancer and wine, `cross_val_score(MLPSearchClassifier(timeout=T), X, y, cv=5)`
(StratifiedKFold(5), what cv=5 means for a classifier) next to, on each of the same folds,
`gsearch run --data TRAIN.csv --timeout T --export DIR` in a fresh process and that export's
accuracy on the fold's test rows; on diabetes `cross_val_score(MLPSearchRegressor(timeout=T),
X, y, cv=5)` (KFold(5)) next to RidgeCV's R^2 on the same folds. --import: the seconds of
`import gsearch` (and of `from gsearch import MLPSearchClassifier`, and of `gsearch --help`) in
fresh processes, with the heavy packages each loads.

    python bench/bench_api.py --cv --timeout 20 --out /tmp/api.json
    python bench/bench_api.py --import
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORT = """
import json, sys, time
t = time.perf_counter()
{statement}
seconds = time.perf_counter() - t
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'optuna', 'pandas', 'numpy', 'sklearn'}})
print(json.dumps({{"seconds": seconds, "heavy": heavy}}))
"""


def measure_import(repeats: int) -> None:
    for statement in ("import gsearch", "from gsearch import MLPSearchClassifier"):
        runs = [json.loads(subprocess.run([sys.executable, "-c", IMPORT.format(statement=statement)],
                                          capture_output=True, text=True, check=True).stdout)
                for _ in range(repeats)]
        seconds = sorted(r["seconds"] for r in runs)
        heavy = ", ".join(runs[0]["heavy"]) or "none"
        print(f"{statement}: median {statistics.median(seconds):.4f} s, min {seconds[0]:.4f} s over "
              f"{repeats} fresh processes; of torch, optuna, pandas, numpy, sklearn it loads: {heavy}")
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gsearch", "--help"], capture_output=True, check=True)
        walls.append(time.perf_counter() - started)
    print(f"gsearch --help (python -m gsearch, whole process): median {statistics.median(walls):.3f} s")


def cli_fold(X, y, train, test, timeout: float, folder: Path) -> float:
    """The CLI's export on one fold: its accuracy on the fold's test rows."""
    import numpy as np

    from gsearch.models.predict import ExportedModel

    frame = X.iloc[train].assign(target=y.iloc[train].astype(str).to_numpy())
    frame.to_csv(folder / "train.csv", index=False)
    subprocess.run([sys.executable, "-m", "gsearch", "run", "--data", folder / "train.csv",
                    "--label", "target", "--timeout", str(timeout), "--export", folder / "model",
                    "--storage", f"sqlite:///{folder / 'studies.db'}"], check=True,
                   capture_output=True, text=True)
    model = ExportedModel(folder / "model", "onnx")
    rows = X.iloc[test]
    p = model.predict_proba(model.matrix({c: rows[c].to_numpy(np.float64) for c in model.features}))
    predicted = np.asarray(model.classes)[p.argmax(axis=1)]
    return float((predicted == y.iloc[test].astype(str).to_numpy()).mean())


def compare(timeout: float) -> list[dict]:
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    from gsearch import MLPSearchClassifier, MLPSearchRegressor

    results = []
    for name, loader in (("breast_cancer", load_breast_cancer), ("wine", load_wine)):
        X, y = loader(return_X_y=True, as_frame=True)
        folds = list(StratifiedKFold(5).split(X, y))
        started = time.perf_counter()
        api = cross_val_score(MLPSearchClassifier(timeout=timeout), X, y, cv=5)
        api_seconds = time.perf_counter() - started
        cli, started = [], time.perf_counter()
        for train, test in folds:
            with tempfile.TemporaryDirectory() as folder:
                cli.append(cli_fold(X, y, train, test, timeout, Path(folder)))
        cli_seconds = time.perf_counter() - started
        results.append({"table": name, "metric": "accuracy", "estimator": api.tolist(),
                        "cli": cli, "estimator_mean": float(api.mean()), "cli_mean": float(np.mean(cli)),
                        "estimator_seconds": api_seconds, "cli_seconds": cli_seconds})
        print(json.dumps(results[-1]), flush=True)
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    started = time.perf_counter()
    api = cross_val_score(MLPSearchRegressor(timeout=timeout), X, y, cv=5)
    api_seconds = time.perf_counter() - started
    ridge = cross_val_score(RidgeCV(alphas=np.logspace(-3, 3, 13)), X, y, cv=KFold(5))
    results.append({"table": "diabetes", "metric": "r2", "estimator": api.tolist(), "ridge": ridge.tolist(),
                    "estimator_mean": float(api.mean()), "ridge_mean": float(ridge.mean()),
                    "estimator_seconds": api_seconds})
    print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cv", action="store_true", help="the cross-validation comparisons")
    parser.add_argument("--import", dest="imports", action="store_true", help="import times")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write the --cv results as JSON")
    args = parser.parse_args()
    if args.imports:
        measure_import(args.repeats)
    if args.cv:
        results = compare(args.timeout)
        for r in results:
            other = ("cli", r["cli_mean"]) if "cli" in r else ("RidgeCV", r["ridge_mean"])
            print(f"{r['table']}: estimator {r['metric']} {r['estimator_mean']:.4f}, {other[0]} "
                  f"{other[1]:.4f} (5 folds)")
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
