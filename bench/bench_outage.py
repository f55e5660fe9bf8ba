"""Robustness figures of storages and workers, printed as a table:

- quick-check: what opening an existing SQLite file costs with its PRAGMA quick_check
  (storage.files.check_sqlite_file), on a file of --sqlite-mb MB (a real Optuna schema, filled
  with trials and curves by bulk inserts), median of 5, and the whole open_storage;
- workers-cap: wall time of `gsearch run --workers 1000 --trials 4` (lowered to 4 workers);
- outage: `gsearch run --workers 2 --trials 60 --fix epochs=30` on PostgreSQL through a TCP
  proxy (tests/test_outage.py's Proxy, 127.0.0.1 only), once per --outage case: no outage
  (`none`), the proxy killed after the 5th finished trial for that many seconds (`10`,
  `120`: a 2-minute outage), or for good (`forever`, with --storage-retry 10). The runs get
  --storage-retry SECONDS, or without it the CLI's default (60 s: a 2-minute outage is more,
  so the run gives up in one line, exit 1). Printed: exit code, wall time and the last line
  on stderr of the run, its trials by state; when it did not finish its count or left a
  trial RUNNING or WAITING, one rerun straight to the database (back by then) with --trials
  the rest, and its trials by state; then whether finished == asked and RUNNING == 0.

Usage: python bench/bench_outage.py [--sqlite-mb 50] [--outage none,10,120] [--trials 60]
       [--storage-retry SECONDS] [--postgres URL] [--skip quick-check,workers-cap,outage]
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
    return subprocess.Popen([sys.executable, "-m", "gsearch", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def quick_check(mb: float) -> None:
    import optuna

    from gsearch.search.storage import StorageURL, open_storage
    from gsearch.search.storage.files import check_sqlite_file

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
            check_sqlite_file(StorageURL.parse(url))
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


def _counts(url: str, name: str) -> str:
    from test_outage import states

    c = states(url, name)
    return (f"finished {c.get('finished', 0)}, FAIL {c.get('fail', 0)}, RUNNING "
            f"{c.get('running', 0)}, WAITING {c.get('waiting', 0)} (all {c.get('all', 0)})")


def outage(url: str, cases: list[str], retry: float | None, trials: int) -> None:
    """Each case: a 2-worker run of `trials` trials through a proxy to `url`, the proxy killed
    after the 5th finished trial for the case's seconds ("none": never; "forever": for good,
    with --storage-retry 10), then, if the run did not finish its count or left a trial
    RUNNING, one rerun (straight to the database, which is back) with --trials the rest."""
    import optuna
    from sqlalchemy.engine import make_url

    from gsearch.search.storage import STORAGE_RETRY, open_storage
    from test_outage import Proxy, states

    storage = open_storage(url)
    common = ["--workers", 2, "--fix", "epochs=30"]
    for case in cases:
        seconds = None if case in ("none", "forever") else float(case)
        given = 10 if case == "forever" else retry
        proxy = Proxy(make_url(url).port or 5432, lifetime=1800)
        name = f"bench-outage-{uuid.uuid4().hex[:8]}"
        via = make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
        options = [] if given is None else ["--storage-retry", given]
        label = (f"{case} s" if seconds is not None else case) + \
            f", --storage-retry {STORAGE_RETRY if given is None else given:g}" + \
            (" (default)" if given is None else "")
        started = time.monotonic()
        run = gsearch("run", "--trials", trials, *common, "--storage", via, "--study", name,
                      *options)
        killed_at = ended_at = None
        try:
            if case != "none":
                while states(url, name).get("finished", 0) < 5 and run.poll() is None:
                    time.sleep(0.2)
                proxy.stop()
                killed_at = time.monotonic()
                if seconds is not None:
                    deadline = killed_at + seconds
                    while time.monotonic() < deadline:
                        if ended_at is None and run.poll() is not None:
                            ended_at = time.monotonic()
                        time.sleep(0.1)
                    proxy.start()
            out, err = run.communicate(timeout=1200)
        finally:
            run.kill()
            proxy.close()
        ended_at = ended_at or time.monotonic()
        after = f", {ended_at - killed_at:.1f} s after the kill" if killed_at else ""
        last = err.strip().splitlines()[-1] if err.strip() else ""
        print(f"outage {label}: {trials} trials asked")
        dropped = sum("dropped here" in line for line in err.splitlines())
        print(f"  run:   exit {run.returncode} in {ended_at - started:.1f} s{after}; traceback "
              f"{'yes' if 'Traceback' in err else 'no'}; lines 'trial ... ended by another "
              f"process ... dropped': {dropped}; last stderr line: {last}")
        print(f"         trials by state: {_counts(url, name)}")
        counts = states(url, name)
        if counts["finished"] < trials or counts["running"] or counts["waiting"]:
            rest = max(1, trials - counts["finished"])
            started = time.monotonic()
            rerun = gsearch("run", "--trials", rest, *common, "--storage", url, "--study", name,
                            *options)
            out, err = rerun.communicate(timeout=1200)
            last = err.strip().splitlines()[-1] if err.strip() else ""
            print(f"  rerun (--trials {rest}): exit {rerun.returncode} in "
                  f"{time.monotonic() - started:.1f} s; traceback "
                  f"{'yes' if 'Traceback' in err else 'no'}; last stderr line: {last}")
            print(f"         trials by state: {_counts(url, name)}")
        counts = states(url, name)
        retried = sum("retry_of" in t.user_attrs for t in
                      optuna.load_study(study_name=name, storage=storage).trials)
        print(f"  finished == {trials} asked: {counts['finished'] == trials}; RUNNING == 0: "
              f"{counts['running'] == 0}; WAITING == 0: {counts['waiting'] == 0}; "
              f"retries run: {retried}", flush=True)
        optuna.delete_study(study_name=name, storage=storage)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-mb", type=float, default=50)
    parser.add_argument("--outage", default="none,10,120",
                        help="comma-separated cases: seconds of outage, none, forever")
    parser.add_argument("--storage-retry", type=float, default=None,
                        help="--storage-retry of the runs (default: the CLI's own default)")
    parser.add_argument("--trials", type=int, default=60)
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
        print(f"{time.strftime('%Y-%m-%d %H:%M')}, commit {_commit()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start",
              flush=True)
        outage(args.postgres, args.outage.split(","), args.storage_retry, args.trials)


if __name__ == "__main__":
    main()
