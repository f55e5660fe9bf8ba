"""Big tables with text columns and empty cells: how reading, encoding and splitting, and a whole
`gsearch run --timeout T --export DIR`, grow from 10,000 to 1,000,000 rows (issue 33, item 7).

The table is generated (seeded): 8 numeric columns (2% empty cells in 3 of them), 3 text
columns of 5, 50 and 500 categories (1% empty in one), and a label of 3 classes that depends on
all of them. For each size it prints the seconds and peak memory of loading the table
(data.load.load_dataset), splitting it (the study's protocol) and encoding a trial's rows
(data.encode), each in a fresh process; with --run, also the wall seconds and peak memory of
`gsearch run --timeout T --export DIR` and the export's test accuracy.

    python bench/bench_big.py --rows 10000,100000,1000000 --run --timeout 300
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PREPARE = """
import json, resource, sys, time
t0 = time.perf_counter()
from gsearch.data.load import load_dataset
from gsearch.data.encode import encoded, encoding_of
from gsearch.search.protocol import Protocol
t1 = time.perf_counter()
ds = load_dataset(sys.argv[1], label="label")
t2 = time.perf_counter()
split = Protocol().split(ds)
t3 = time.perf_counter()
enc = encoding_of(ds, split.train)
X = encoded(ds, enc, split.train)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "split": t3 - t2, "encode": t4 - t3,
                  "width": int(X.shape[1]),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows).round(4) for i in range(8)})
    for i in (1, 4, 6):
        frame.loc[rng.random(rows) < 0.02, f"x{i}"] = np.nan
    for name, k in (("small", 5), ("medium", 50), ("large", 500)):
        frame[name] = np.char.add(name[0], rng.integers(0, k, rows).astype(str))
    frame.loc[rng.random(rows) < 0.01, "medium"] = ""
    effect = {f"m{i}": v for i, v in enumerate(rng.normal(0, 1, 50))}
    score = (frame.x0 + 0.5 * frame.x1.fillna(0) - frame.x2 + (frame.small == "s1")
             + frame.medium.map(effect).fillna(0) + rng.normal(0, 1, rows))
    frame["label"] = np.where(score > 1, "high", np.where(score > -1, "mid", "low"))
    return frame


def measure(csv: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PREPARE, str(csv)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def run(csv: Path, folder: Path, timeout: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gsearch", "run", "--data", str(csv), "--label",
                           "label", "--storage", f"sqlite:///{folder / 's.db'}", "--timeout",
                           str(timeout), "--export", str(folder / "model")],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode:
        return {"seconds": seconds, "error": proc.stderr.strip().splitlines()[-1:]}
    meta = json.loads((folder / "model" / "model.json").read_text())
    trials = [line for line in proc.stdout.splitlines() if line.startswith("study '")]
    return {"seconds": seconds, "peak_mb": peak, "test_accuracy": meta["test_accuracy"],
            "train_seconds": meta["train_seconds"], "summary": trials[-1] if trials else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--run", action="store_true", help="also time gsearch run --export")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gsearch-big-") as tmp:
        for rows in map(int, args.rows.split(",")):
            folder = Path(tmp) / str(rows)
            folder.mkdir()
            csv = folder / "table.csv"
            table(rows).to_csv(csv, index=False)
            m = measure(csv)
            print(f"{rows:>9,} rows ({csv.stat().st_size / 2**20:.0f} MB): load {m['load']:.1f} s, "
                  f"split {m['split']:.1f} s, encode {m['encode']:.1f} s (width {m['width']}), "
                  f"imports {m['import']:.1f} s, peak {m['peak_mb']:.0f} MB", flush=True)
            if args.run:
                r = run(csv, folder, args.timeout)
                print(f"{'':>9}  gsearch run --timeout {args.timeout:g} --export: "
                      + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
