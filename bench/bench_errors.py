"""Wall seconds until `gsearch` reports a trivial mistake, run as a user runs it (a new process).

Each case is a command that must fail with one line on stderr and a non-zero exit: a bad path,
option or URL, and bad content (a table without its label column, with several problems, with
a cell that is not a number; a study the storage does not hold; a FIFO or /dev/zero as --data;
gzip bombs and a table over --max-data-mb; an export folder that holds a user's files), read from small files the script writes first
({table} names them). It is run --repeat times, each time as a new process in an empty temporary folder (so no studies.db is
found there), and the script prints min / median / max seconds, the exit status and the
last stderr line. A case that exits 0, or prints more than one line (click's own usage errors
print three: Usage, Try, Error), is flagged.

Usage: python bench/bench_errors.py [--repeat R] [--case NAME ...]
"""
import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "run --data missing": ["run", "--data", "no-such-file.csv", "--trials", "1"],
    "run --storage sqlite:/studies.db": ["run", "--storage", "sqlite:/studies.db", "--trials", "1"],
    "run --storage postgres://": ["run", "--storage", "postgres://me@localhost/db", "--trials", "1"],
    "run --storage postgresql+psycopg3://": ["run", "--storage", "postgresql+psycopg3://me@localhost/db",
                                              "--trials", "1"],
    "run --device cuda (no CUDA)": ["run", "--device", "cuda", "--trials", "1"],
    "studies (missing file)": ["studies", "--storage", "sqlite:///missing.db"],
    "export-best (missing file)": ["export-best", "--storage", "sqlite:///missing.db"],
    "report (missing file)": ["report", "--storage", "sqlite:///missing.db"],
    "dashboard (missing file)": ["dashboard", "--storage", "sqlite:///missing.db"],
    "run --pruner typo (click)": ["run", "--pruner", "ashaa"],
    "run: no label column": ["run", "--data", "{no_label}"],
    "run: three header problems": ["run", "--data", "{no_label}", "--drop", "c,d", "--group", "g"],
    "run: a cell that is not a number": ["run", "--data", "{bad_cell}"],
    "export-best --study nosuchstudy": ["export-best", "--study", "nosuchstudy", "--storage",
                                        "sqlite:///{db}"],
    "report --study nosuchstudy": ["report", "--study", "nosuchstudy", "--storage", "sqlite:///{db}"],
    "run --data /dev/zero": ["run", "--data", "/dev/zero"],
    "run --data FIFO": ["run", "--data", "{fifo}"],
    "evaluate --data /dev/zero": ["evaluate", "--data", "/dev/zero"],
    "run: gzip bomb, 1 GiB (size in trailer)": ["run", "--data", "{bomb}"],
    "run: gzip bomb, 1 GiB (inflated to 512)": ["run", "--data", "{bomb_members}"],
    "run: plain table over --max-data-mb": ["run", "--data", "{bad_cell}", "--max-data-mb", "0.01"],
    "run --fix lr=0": ["run", "--fix", "lr=0", "--storage", "sqlite:///s.db"],
    "run --cv 200 (800 rows)": ["run", "--cv", "200", "--storage", "sqlite:///s.db"],
    "run --export (a folder of one's files)": ["run", "--trials", "1", "--export", "{own_folder}",
                                               "--storage", "sqlite:///s.db"],
    "export-best --out (a folder of one's files)": ["export-best", "--study", "kept", "--storage",
                                                    "sqlite:///{db}", "--out", "{own_folder}"],
}


def write_fixtures(folder: Path) -> dict[str, str]:
    """The files the content cases read: two tables and a SQLite storage with one study."""
    import optuna
    import pandas as pd

    from gsearch.data.load import BUNDLED_DATA

    (folder / "no_label.csv").write_text("a,b,kind\n1,2,x\n3,4,y\n")
    kaggle = pd.read_csv(BUNDLED_DATA).head(50)
    kaggle["tempo"] = kaggle["tempo"].astype(object)
    kaggle.loc[3, "tempo"] = "fast"
    kaggle.to_csv(folder / "bad_cell.csv", index=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="kept", storage=f"sqlite:///{folder / 'studies.db'}")
    os.mkfifo(folder / "fifo.csv")
    mb = b"1,2,x\n" * ((1 << 20) // 6)
    member = gzip.compress(b"a,b,label\n" + mb, 9)
    with gzip.open(folder / "bomb.csv.gz", "wb", 9) as f:   # one member: its trailer says 1 GiB
        f.write(b"a,b,label\n")
        for _ in range(1024):
            f.write(mb)
    # 1024 members of 1 MiB each: only inflating finds the size (as for any multiple of 4 GiB)
    (folder / "members.csv.gz").write_bytes(member * 1024)
    (folder / "own").mkdir()   # a folder of the user's: not an export, never written over
    (folder / "own" / "report.json").write_text("{}")
    return {"no_label": str(folder / "no_label.csv"), "bad_cell": str(folder / "bad_cell.csv"),
            "db": str(folder / "studies.db"), "fifo": str(folder / "fifo.csv"),
            "bomb": str(folder / "bomb.csv.gz"), "bomb_members": str(folder / "members.csv.gz"),
            "own_folder": str(folder / "own")}


def gsearch() -> list[str]:
    """The console script next to this Python, as a user calls it; else python -m gsearch."""
    script = Path(sys.executable).with_name("gsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gsearch"]


def time_case(args: list[str], cwd: str) -> tuple[float, int, str]:
    env = {k: v for k, v in os.environ.items() if k != "GSEARCH_STORAGE"}
    t = time.perf_counter()
    done = subprocess.run(gsearch() + args, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, done.returncode, done.stderr


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case [5]")
    parser.add_argument("--case", action="append", choices=list(CASES), help="only these cases")
    opts = parser.parse_args()
    fixtures = tempfile.TemporaryDirectory()
    files = write_fixtures(Path(fixtures.name))
    print(f"{'case':<40} {'min':>6} {'median':>6} {'max':>6}  rc  stderr")
    for name in opts.case or CASES:
        walls, rc, err = [], 0, ""
        for _ in range(opts.repeat):
            with tempfile.TemporaryDirectory() as cwd:
                wall, rc, err = time_case([a.format(**files) for a in CASES[name]], cwd)
                walls.append(wall)
        lines = err.strip().splitlines()
        flag = ("  <-- exit 0" if not rc else "" if len(lines) == 1
                else f"  ({len(lines)} stderr lines: click's usage error)")
        print(f"{name:<40} {min(walls):6.2f} {statistics.median(walls):6.2f} {max(walls):6.2f}  "
              f"{rc:>2}  {lines[-1][:110] if lines else ''}{flag}", flush=True)
