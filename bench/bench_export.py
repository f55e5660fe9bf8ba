"""How an export's time grows with the classes: export-best on tables of 100 to 5,000 classes.

For each class count C, writes a table of C classes (10 rows each, 16 numeric features, a
`label` column), searches it for one trial of a tiny fixed model (one layer of 32, 20 epochs:
the retraining is not what is measured) in a study in memory, then times `export_best`
(search.export: the retraining of that trial, the calibration, the test report, model.onnx,
model.pt, model.json, report.json and the test plot, written whole) in this process. Prints per
C: the export's wall seconds; the seconds of its steps, timed by wrapping search.export's
functions: the training (the exported trial and its calibration copy), the calibration
(temperature search and conformal sets), the test report, the model files (model.onnx,
model.pt, model.json and the ONNX latency) and the test plot; the rest (the data, the split,
the outputs); report.json's size, and the peak memory of the process so far (ru_maxrss: it
only grows from one C to the next, so run one C per process for a clean figure).

Usage: python bench/bench_export.py [--classes 100,1000,5000]
"""
import argparse
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def table(classes: int, path: Path, rows_per_class: int = 10) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (classes, 16))
    y = np.repeat(np.arange(classes), rows_per_class)
    X = centers[y] + rng.normal(0, 0.7, (len(y), 16))
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i}" for i in range(16)])
    frame["label"] = [f"class_{c}" for c in y]
    frame.to_csv(path, index=False)


def tiny(trial):
    from gsearch.models.config import TrialConfig

    return TrialConfig(n_layers=1, width=32, epochs=20, batch_size=256, lr=3e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="100,1000,5000")
    args = parser.parse_args()
    import torch

    from gsearch.search.export import export_best
    from gsearch.search.requests import RunRequest
    from gsearch.search.runner import run_study

    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, torch {torch.__version__}, commit {commit}")
    import gsearch.search.export as exporting

    spent = {}
    steps = {"train": "train_population", "calibrate": "classifier_calibration",
             "report": "test_report", "files": "save_model", "plot": "plot_test"}
    for step, name in steps.items():
        setattr(exporting, name, timed(getattr(exporting, name), step, spent))
    print(f"{'classes':>7} {'rows':>6} {'export s':>8} " + " ".join(f"{s + ' s':>11}" for s in steps)
          + f" {'rest s':>6} {'report.json':>11} {'peak RSS':>9}")
    for classes in [int(c) for c in args.classes.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            csv = Path(folder) / f"c{classes}.csv"
            table(classes, csv)
            request = RunRequest(data=csv, label="label", storage=None, study=f"c{classes}",
                                 trials=1, space=tiny, progress="off", seed=0)
            study = run_study(request, echo=lambda *a, **k: None).study
            spent.clear()
            started = time.perf_counter()
            export_best(study, Path(folder) / "export", device=torch.device("cpu"),
                        data_path=str(csv), ensemble=1)
            seconds = time.perf_counter() - started
            size = (Path(folder) / "export" / "report.json").stat().st_size
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{classes:>7} {classes * 10:>6} {seconds:>8.1f} "
                  + " ".join(f"{spent.get(s, 0.0):>11.1f}" for s in steps)
                  + f" {seconds - sum(spent.values()):>6.1f} {size / 1e6:>9.2f}MB {peak:>7.0f}MB",
                  flush=True)


def timed(function, step: str, spent: dict):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[step] = spent.get(step, 0.0) + time.perf_counter() - started
    return wrapper


if __name__ == "__main__":
    main()
