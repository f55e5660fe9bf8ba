"""Workers SIGKILLed at random moments during a run on PostgreSQL, as an out-of-memory killer
would: the run still ends with exit 0, exactly its trials finished, nothing RUNNING or
WAITING, and each killed trial run once more with its parameters. The short version of
bench/bench_chaos.py (which runs 4 workers, 60 trials and 10 kills); the test carries its own
copy of the kill loop, so that it depends on no bench script."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # worker processes killed under load


def workers_of(pid: int) -> list[int]:
    """Worker processes of a run: the children of its forkserver, a child of the run."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    return [w for child in children.get(pid, []) for w in children.get(child, [])]


def busy_indices(study) -> set[int]:
    """Numbers of the run's worker processes (0, 1, ... in start order) that hold a running
    trial: the worker that created it, or the one that took it from the queue (a retry)."""
    from optuna.trial import TrialState

    from gsearch.search import records

    busy = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        takers = [k[len(records.TAKEN_BY):] for k, v in t.system_attrs.items()
                  if k.startswith(records.TAKEN_BY) and v]
        for name in takers or [t.system_attrs.get(records.WORKER, "")]:
            if "/" in name:
                busy.add(int(name.rsplit("/", 1)[1]))
    return busy


def outcome(storage: str, study: str) -> dict:
    """What the study holds after the run."""
    import optuna

    from gsearch.search import records
    from gsearch.search.storage import RETRIES, open_storage

    State = optuna.trial.TrialState
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    failed = [t for t in trials if t.state == State.FAIL]
    retries = {}
    for t in trials:
        if records.RETRY_OF in t.user_attrs:
            retries.setdefault(t.user_attrs[records.RETRY_OF], []).append(t)
    # a trial killed while its parameters were being sampled gets the rest in its retry;
    # one whose retries were all killed too is not run again after RETRIES of them
    given_up = [f.number for f in failed if len(f.system_attrs.get(records.RETRY_HISTORY, [])) >= RETRIES]

    def differing(f):  # the killed trial's parameters its one retry lacks or changed
        again = retries.get(f.number, [])
        return sorted(k for k, v in f.params.items() if again[0].params.get(k) != v) if len(again) == 1 else []

    not_retried_once = [  # trial number, its retries' numbers, its retry history, differing params
        (f.number, [r.number for r in retries.get(f.number, [])],
         f.system_attrs.get(records.RETRY_HISTORY, []), differing(f))
        for f in failed if f.number not in given_up and (
            len(retries.get(f.number, [])) != 1 or differing(f))]
    return {"finished": sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials),
            "failed": len(failed), "retries": sum(map(len, retries.values())),
            "running": sum(t.state == State.RUNNING for t in trials),
            "waiting": sum(t.state == State.WAITING for t in trials),
            "retry_limit_reached": given_up, "failed_not_retried_once": not_retried_once}


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:   # it ended on its own meanwhile
        pass


def chaos(storage: str, data: str, *, workers: int, trials: int, kills: int,
          gap: tuple[float, float], fixed: list[str], heartbeat: int = 1, seed: int = 0,
          timeout: float = 600) -> dict:
    """Run a study, kill `kills` workers at random moments at least `gap` seconds apart
    (the first once every worker is up), each a worker that holds a running trial; wait for
    the run to end; the figures. The study is deleted afterwards."""
    study = f"chaos-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "gsearch", "run", "--storage", storage,
               "--study", study, "--data", str(data), "--workers", str(workers), "--trials",
               str(trials), "--heartbeat", str(heartbeat), "--seed", str(seed)]
    for fix in fixed:
        command += ["--fix", fix]
    import optuna

    from gsearch.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    start = time.monotonic()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done, started = 0, []   # started: every worker pid seen, in start order
    at = None                               # when the next kill is due
    try:
        while done < kills and run.poll() is None and time.monotonic() - start < timeout:
            time.sleep(0.05)
            alive = workers_of(run.pid)
            started += sorted(pid for pid in alive if pid not in started)
            if at is None:   # the first kill: once every worker is up (the run has made the
                if len(alive) >= workers:   # study and its tables before it starts them)
                    handle = optuna.load_study(study_name=study, storage=open_storage(storage))
                    at = time.monotonic() + rng.uniform(*gap)
                continue
            if time.monotonic() < at:
                continue
            running = busy_indices(handle)
            busy = [pid for pid in alive if started.index(pid) in running]
            if busy:   # else wait until a worker holds a trial
                kill(rng.choice(busy))
                done += 1
                at = time.monotonic() + rng.uniform(*gap)
        out, err = run.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    figures = {"kills": done, "exit_code": run.returncode,
               "wall_seconds": round(time.monotonic() - start, 1), **outcome(storage, study),
               "last_error_line": (err.strip().splitlines() or [""])[-1]}
    optuna.delete_study(study_name=study, storage=open_storage(storage))
    return figures


def test_killed_workers_under_load_leave_the_run_complete(make_csv, postgres_url):
    figures = chaos(postgres_url, make_csv(), workers=3, trials=30, kills=4,
                    gap=(0.4, 0.9), fixed=["epochs=30", "n_layers=1", "width=32"],
                    seed=5, timeout=120)
    shown = json.dumps(figures)   # in full on failure
    assert figures["kills"] == 4, shown
    assert figures["exit_code"] == 0, shown
    assert figures["finished"] == 30 and figures["failed"] >= 1, shown
    assert figures["running"] == 0 and figures["waiting"] == 0, shown
    assert figures["failed_not_retried_once"] == [], shown
