"""Robustness figures of storages and workers, printed as a table:

- quick-check: what opening an existing SQLite file costs with its PRAGMA quick_check
  (storage._check_sqlite_file), on a file of --sqlite-mb MB (a real Optuna schema, filled
  with trials and curves by bulk inserts), median of 5, and the whole open_storage;
- workers-cap: wall time of `gsearch run --workers 1000 --trials 4` (lowered to 4 workers);
- outage: `gsearch run --workers 2 --trials 60 --fix epochs=30` on PostgreSQL through a TCP
  proxy (tests/test_outage.py's Proxy, 127.0.0.1 only) without an outage, with the proxy
  killed for --outage seconds after the 5th finished trial (--storage-retry 60), and killed
  for good (--storage-retry 10): wall time, exit code, trials finished and left RUNNING,
  the last line on stderr; then the RUNNING trials a later run (--heartbeat 1, 15 s) leaves.

Usage: python bench/bench_outage.py [--sqlite-mb 50] [--outage 10] [--postgres URL]
       [--skip quick-check,workers-cap,outage]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def gsearch(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gsearch.search.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def quick_check(mb: float) -> None:
    import optuna

    from gsearch.search.storage import _check_sqlite_file, open_storage

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "big.db"
        url = f"sqlite:///{db}"
        study = optuna.create_study(storage=open_storage(url), study_name="big")
        study.ask()   # one real trial row to copy
        with sqlite3.connect(db) as c:
            sid = study._study_id
            number = 1
            while db.stat().st_size < mb * 1e6:
                rows = [(number + i, sid, "COMPLETE", "2026-01-01", "2026-01-01")
                        for i in range(2000)]
                c.executemany("INSERT INTO trials (number, study_id, state, datetime_start, "
                              "datetime_complete) VALUES (?, ?, ?, ?, ?)", rows)
                ids = [r[0] for r in c.execute("SELECT trial_id FROM trials WHERE number >= ?",
                                               (number,))]
                c.executemany("INSERT INTO trial_intermediate_values (trial_id, step, "
                              "intermediate_value, intermediate_value_type) VALUES (?, ?, ?, ?)",
                              [(t, s, 0.5 + s / 1000, "FINITE") for t in ids for s in range(30)])
                c.commit()
                number += 2000
        size = db.stat().st_size / 1e6
        checks, opens = [], []
        for _ in range(5):
            started = time.perf_counter()
            _check_sqlite_file(url, db)
            checks.append(time.perf_counter() - started)
            started = time.perf_counter()
            open_storage(url).engine.dispose()
            opens.append(time.perf_counter() - started)
        print(f"quick-check   {size:.1f} MB SQLite file ({number - 1} trials): quick_check "
              f"{statistics.median(checks) * 1000:.0f} ms, whole open_storage "
              f"{statistics.median(opens) * 1000:.0f} ms (median of 5, file in the page cache)")


def workers_cap() -> None:
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        run = gsearch("run", "--workers", 1000, "--trials", 4, "--fix", "epochs=30",
                      "--storage", f"sqlite:///{folder}/w.db", cwd=folder)
        out, err = run.communicate(timeout=600)
        note = next((line for line in err.splitlines() if line.startswith("note:")), "")
        print(f"workers-cap   --workers 1000 --trials 4: exit {run.returncode} in "
              f"{time.monotonic() - started:.1f} s; {note}")


def outage(url: str, seconds: float) -> None:
    import optuna
    from sqlalchemy.engine import make_url

    from gsearch.search.storage import open_storage
    from test_outage import Proxy, states

    storage = open_storage(url)
    for case in ("none", f"{seconds:g} s", "for good"):
        proxy = Proxy(make_url(url).port or 5432, lifetime=900)
        name = f"bench-outage-{uuid.uuid4().hex[:8]}"
        retry = 10 if case == "for good" else 60
        via = make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
        started = time.monotonic()
        run = gsearch("run", "--workers", 2, "--trials", 60, "--fix", "epochs=30", "--storage",
                      via, "--study", name, "--storage-retry", retry)
        killed_at = None
        try:
            if case != "none":
                while states(url, name).get("finished", 0) < 5 and run.poll() is None:
                    time.sleep(0.2)
                proxy.stop()
                killed_at = time.monotonic()
                if case != "for good":
                    time.sleep(seconds)
                    proxy.start()
            out, err = run.communicate(timeout=600)
        finally:
            run.kill()
            proxy.close()
        wall = time.monotonic() - started
        after = f", {time.monotonic() - killed_at:.1f} s after the kill" if killed_at else ""
        counts = states(url, name)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        print(f"outage {case:>9}: exit {run.returncode} in {wall:.1f} s{after}; finished "
              f"{counts['finished']}, RUNNING left {counts['running']}, traceback "
              f"{'yes' if 'Traceback' in err else 'no'}; last line: {last[:150]}")
        if counts["running"]:
            later = gsearch("run", "--trials", 10_000, "--timeout", 15, "--fix", "epochs=30",
                            "--storage", url, "--study", name, "--heartbeat", 1)
            later.communicate(timeout=600)
            print(f"               a later run (--heartbeat 1, --timeout 15): exit "
                  f"{later.returncode}, RUNNING left {states(url, name)['running']}")
        optuna.delete_study(study_name=name, storage=storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-mb", type=float, default=50)
    parser.add_argument("--outage", type=float, default=10)
    parser.add_argument("--postgres", default=os.environ.get(
        "GSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if "quick-check" not in skip:
        quick_check(args.sqlite_mb)
    if "workers-cap" not in skip:
        workers_cap()
    if "outage" not in skip:
        outage(args.postgres, args.outage)


if __name__ == "__main__":
    main()
