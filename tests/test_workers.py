"""Several workers on one study, for real: worker processes on SQLite, PostgreSQL and Redis,
a worker killed mid-trial, Ctrl-C/SIGTERM, unreachable servers. Trials are kept short with
--fix epochs=30 on a tiny synthetic CSV."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from conftest import RaceRetried

from gsearch.search.storage import open_storage

pytestmark = pytest.mark.slow   # worker processes, signals, a gRPC proxy

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FAST = ("--fix", "epochs=30", "--seed", "3", "--pruner", "none")  # no pruner reads per epoch


def counts(url, name):
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    return {"finished": sum(t.state in FINISHED for t in trials),
            "fail": sum(t.state == TrialState.FAIL for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials),
            "all": len(trials)}


def run_workers_and_resume(cli, url, name, csv, workers, first, more):
    args = ["--data", csv, "--storage", url, "--study", name, "--workers", workers, *FAST]
    result = cli("run", "--trials", first, *args)
    assert result.exit_code == 0, result.output
    assert counts(url, name) == {"finished": first, "fail": 0, "running": 0, "waiting": 0,
                                 "all": first}
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)  # each worker samples with its own seed
    result = cli("run", "--trials", more, *args)
    assert result.exit_code == 0, result.output
    assert counts(url, name)["finished"] == first + more  # --trials counts this run only
    listed = cli("studies", "--storage", url)
    row = next(line.split() for line in listed.output.splitlines() if line.startswith(name))
    assert row[1:6] == [str(first + more), row[2], row[3], "0", "0"]


def test_four_workers_on_sqlite_finish_exactly_the_requested_trials(cli, make_csv, tmp_path):
    db = tmp_path / "s.db"
    run_workers_and_resume(cli, f"sqlite:///{db}", "w", make_csv(), 4, 8, 2)
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_workers_on_a_journal_file(cli, make_csv, tmp_path):
    run_workers_and_resume(cli, str(tmp_path / "studies.log"), "j", make_csv(), 3, 6, 2)


def free_port():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_workers_through_the_grpc_storage_proxy(cli, make_csv, tmp_path, stop):
    port = free_port()
    server = gsearch("serve-storage", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--port",
                     port, cwd=tmp_path, preexec_fn=ignore_sigint)
    try:
        url = f"grpc://127.0.0.1:{port}"
        wait_for(lambda: cli("studies", "--storage", url).exit_code == 0, seconds=60)
        taken = cli("serve-storage", "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--port", port)
        assert taken.exit_code == 1 and "choose another --port" in taken.output
        run_workers_and_resume(cli, url, "g", make_csv(), 2, 4, 2)
    finally:
        server.send_signal(stop)
        try:
            out, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # do not leave it holding the port for the tests after this one
            raise
    assert server.returncode == 0 and "storage proxy stopped" in out, err
    assert counts(f"sqlite:///{tmp_path / 's.db'}", "g")["finished"] == 6


@pytest.mark.parametrize("server", ["postgres_url", "mysql_url"])
def test_four_workers_on_a_database_server(cli, make_csv, request, server):
    url = request.getfixturevalue(server)
    name = f"test-workers-{uuid.uuid4().hex[:8]}"
    try:
        run_workers_and_resume(cli, url, name, make_csv(), 4, 8, 2)
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url))


def test_workers_on_a_redis_journal(cli, make_csv, redis_url):
    import redis

    name = f"test-workers-{uuid.uuid4().hex[:8]}"
    storage = open_storage(redis_url)
    try:
        run_workers_and_resume(cli, redis_url, name, make_csv(), 3, 6, 2)
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        if not storage.get_all_studies():  # nobody else's journal: leave Redis as it was
            client = redis.Redis.from_url(redis_url)
            keys = client.keys(":log:*") + [":log_number", ":snapshot"]
            client.delete(*keys)


def gsearch(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gsearch", *map(str, args)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def ignore_sigint():
    """Start a child as a script's `cmd &` or a CI runner does: with SIGINT ignored, which
    Python then leaves ignored. gsearch must still stop on it where it promises to."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def workers_of(pid):
    """Worker processes of a run's parent: the children of its forkserver."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    return [w for child in children.get(pid, []) for w in children.get(child, [])]


def has_study(db, name):
    """Whether the SQLite file already holds the study (read directly: opening the storage
    while the run creates its tables would race with it)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            rows = connection.execute("SELECT study_name FROM studies").fetchall()
    except sqlite3.Error:
        return False
    return (name,) in rows


def wait_for(condition, seconds=90):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_budget_counts_the_run_and_gets_a_dead_workers_claims_back():
    import multiprocessing

    from gsearch.search.worker import Budget as _Budget

    budget = _Budget(multiprocessing.get_context(), workers=2, total=5)
    assert [budget.claim(0) for _ in range(3)] == [True] * 3  # a population: 3 in flight
    assert budget.claim(1) and budget.claim(1) and not budget.claim(1)  # 5 claimed
    budget.release(1, finished=True)
    budget.release(1, finished=False)  # a failed trial gives its claim back
    assert budget.claim(1) and not budget.claim(0)
    budget.drop(0)  # worker 0 was killed with 3 trials in flight
    assert [budget.claim(1) for _ in range(4)] == [True, True, True, False]


def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(cli, make_csv, tmp_path):
    """The run's parent is this process (its forkserver's children are the workers); a
    thread freezes both workers when both are mid-trial and kills one with SIGKILL. The
    parent fails the dead worker's trial at once and enqueues it again."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--data", make_csv(tracks_per_class=360), "--storage", url, "--study", "k",
            "--workers", 2, "--heartbeat", 1, "--fix", "epochs=100", "--fix", "width=256",
            "--fix", "n_layers=3", "--fix", "batch_size=64", "--pruner", "none", "--population", 1]
    # trials of a few seconds: long enough to be caught mid-trial with their curves stored
    killed = {}

    def kill_one_mid_trial():
        wait_for(lambda: has_study(tmp_path / "s.db", "k") and len(workers_of(os.getpid())) == 2
                 and counts(url, "k")["finished"] >= 1)
        study = optuna.load_study(study_name="k", storage=open_storage(url))
        while True:
            workers = workers_of(os.getpid())
            for w in workers:
                os.kill(w, signal.SIGSTOP)
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                       if t.intermediate_values]  # reporting, so its heartbeat is beating
            if len(workers) == 2 and len(running) == 2:
                os.kill(workers[0], signal.SIGKILL)
                os.kill(workers[1], signal.SIGCONT)
                killed["at"] = time.monotonic()
                return
            for w in workers:
                os.kill(w, signal.SIGCONT)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_mid_trial, daemon=True)
    killer.start()
    result = cli("run", "--trials", 6, *args)
    killer.join(timeout=1)
    assert result.exit_code == 0, result.output
    assert "at" in killed, "the run ended before a worker could be killed"
    assert re.search(r"worker \d was killed \(SIGKILL\).*starting a replacement", result.output)
    assert counts(url, "k")["finished"] == 6  # the run still reached its count
    time.sleep(max(0.0, killed["at"] + 4 - time.monotonic()))  # past the grace period (3 s)
    rerun = cli("run", "--trials", 1, *args)
    assert rerun.exit_code == 0, rerun.output
    after = counts(url, "k")
    assert after["running"] == 0 and after["waiting"] == 0 and after["fail"] == 1
    assert after["finished"] == 7
    trials = optuna.load_study(study_name="k", storage=open_storage(url)).trials
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == failed.number)
    assert retry.state in FINISHED and retry.params == failed.params
    assert retry.system_attrs["failed_trial"] == failed.number


@pytest.mark.race(tries=3)
@pytest.mark.parametrize("workers, how", [(2, "ctrl-c"), (1, "sigterm")])
def test_interrupt_leaves_no_running_trial_and_a_rerun_resumes(cli, make_csv, tmp_path, workers,
                                                               how, request, record_property):
    csv = make_csv()
    # The trials in flight are tiny: on a loaded machine they may all end in the round the
    # signal lands in, and then nothing is left to interrupt (a clean stop all the same). Such
    # a run is checked as every run is, and the test goes again, on a new store, at most
    # `tries` times (the race marker); how many it took is recorded, and said when over one.
    tries = request.node.get_closest_marker("race").kwargs["tries"]
    for attempt in range(tries):
        url = f"sqlite:///{tmp_path / f's{attempt}.db'}"
        args = ["--data", csv, "--storage", url, "--study", "i", "--workers", workers,
                "--fix", "epochs=40", "--pruner", "none", "--population", 2]  # 2 in flight each
        proc = gsearch("run", "--trials", 500, *args, cwd=tmp_path, start_new_session=True,
                       preexec_fn=ignore_sigint)
        try:
            wait_for(lambda: has_study(tmp_path / f"s{attempt}.db", "i")
                     and counts(url, "i")["finished"] >= 1 and counts(url, "i")["running"] >= 1)
            if how == "ctrl-c":  # a terminal sends SIGINT to the whole process group
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("interrupted: finished trials are saved")
        before = counts(url, "i")
        assert before["running"] == 0 and before["finished"] >= 1
        # the trials in flight are marked interrupted, not failures of their configuration
        failed = [t for t in optuna.load_study(study_name="i", storage=open_storage(url)).trials
                  if t.state == TrialState.FAIL]
        assert all(t.user_attrs.get("interrupted") for t in failed)
        if failed:
            break
    assert failed, f"in {tries} runs the signal never found a trial in flight"
    record_property("race_tries", attempt + 1)
    if attempt:
        warnings.warn(f"the interrupt found a trial in flight on try {attempt + 1} of {tries}",
                      RaceRetried)
    listed = cli("studies", "--storage", url).output.splitlines()
    assert listed[0].split()[-3:] == ["interrupted", "pareto", "best"]
    row = next(line.split() for line in listed if line.startswith("i "))
    assert row[4] == "0" and row[6] == str(len(failed))   # failed 0, interrupted all of them
    rerun = cli("run", "--trials", 2, *args, "--workers", 1)  # in this process: cheaper
    assert rerun.exit_code == 0, rerun.output
    after = counts(url, "i")
    assert after["running"] == 0 and after["finished"] == before["finished"] + 2


@pytest.mark.parametrize("url, expected", [
    ("postgresql://me:s3cret@127.0.0.1:9/x", "cannot open storage postgresql://me:\\*\\*\\*@"),
    ("redis://:s3cret@127.0.0.1:9/0", "cannot reach Redis storage redis://:\\*\\*\\*@"),
    ("mysql://me:s3cret@127.0.0.1:9/x", "cannot open storage mysql://me:\\*\\*\\*@"),
    ("mysql+mysqldb://me:s3cret@127.0.0.1/x", "no database driver for mysql\\+mysqldb://me:\\*\\*\\*@"),
    ("grpc://127.0.0.1:9", "cannot reach the storage proxy at grpc://127.0.0.1:9"),
    ("sqlite:///{tmp}/s.db --fix epochs=25", "not a value of epochs"),
])
def test_bad_storage_fails_in_one_line_with_the_password_masked(cli, make_csv, tmp_path, url,
                                                                  expected):
    url, *extra = url.format(tmp=tmp_path).split()
    result = cli("run", "--trials", 1, "--data", make_csv(), "--storage", url, "--workers", 2,
                 *extra)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "s3cret" not in lines[0]
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "s.db").exists()


def test_retries_the_heartbeat_enqueues_during_a_run_are_run_before_it_ends(cli, make_csv,
                                                                            tmp_path):
    """A run killed outright leaves trials RUNNING; the next run's heartbeat finds them stale
    after it has asked all its trials. Their retries must not be left WAITING."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    args = ["--data", make_csv(tracks_per_class=120), "--storage", url, "--study", "r",
            "--pruner", "none", "--population", 1, "--seed", 1]
    assert cli("run", "--trials", 1, *args, "--fix", "epochs=30").exit_code == 0
    storage = open_storage(url, heartbeat=1)
    study = optuna.load_study(study_name="r", storage=storage)
    done = study.trials[0]
    injected = []

    def killed_run_leaves_two_running_trials():   # once the rerun trains its one trial
        wait_for(lambda: any(t.intermediate_values for t in
                             study.get_trials(states=(TrialState.RUNNING,))))
        for _ in range(2):
            template = optuna.trial.FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None,
                datetime_start=done.datetime_start, datetime_complete=None, params=done.params,
                distributions=done.distributions, user_attrs={}, system_attrs={},
                intermediate_values={}, trial_id=-1)
            trial = storage.create_new_trial(study._study_id, template)
            storage.record_heartbeat(trial)
            injected.append(trial)
        with sqlite3.connect(db) as connection:   # their heartbeat stopped an hour ago
            connection.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', "
                               f"'-1 hour') WHERE trial_id IN ({','.join(map(str, injected))})")

    killer = threading.Thread(target=killed_run_leaves_two_running_trials, daemon=True)
    killer.start()
    rerun = cli("run", "--trials", 1, *args, "--heartbeat", 1, "--fix", "epochs=100",
                "--fix", "batch_size=32", "--fix", "width=256", "--fix", "n_layers=3")
    killer.join(timeout=5)
    assert rerun.exit_code == 0, rerun.output
    assert len(injected) == 2, "the rerun ended before the killed run's trials were added"
    after = counts(url, "r")
    assert after == {"finished": 4, "fail": 2, "running": 0, "waiting": 0, "all": 6}, after
    trials = optuna.load_study(study_name="r", storage=open_storage(url)).trials
    retried = sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs)
    assert retried == sorted(t.number for t in trials if t.state == TrialState.FAIL)


def test_workers_are_bounded_by_the_trials_and_the_cores(cli, make_csv, tmp_path):
    from gsearch.search._spawn import cpu_count

    url = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--data", make_csv(), "--storage", url, "--study", "b", *FAST]
    result = cli("run", "--trials", 2, "--workers", 1000, *args)
    assert result.exit_code == 0, result.output
    assert "note: --workers" not in result.output   # as many workers as trials: no note
    assert counts(url, "b") == {"finished": 2, "fail": 0, "running": 0, "waiting": 0, "all": 2}
    trials = optuna.load_study(study_name="b", storage=open_storage(url)).trials
    assert {t.system_attrs["gsearch:worker"].split("/")[1] for t in trials} <= {"0", "1"}
    most = 4 * cpu_count()
    result = cli("run", "--trials", most + 1, "--workers", most + 1, "--timeout", 2, *args)
    assert result.exit_code == 0, result.output
    assert f"note: --workers {most + 1} lowered to {most}, 4 per core" in result.output
    assert counts(url, "b")["running"] == 0


def unlocked(db):
    """Whether no process holds the SQLite file's write lock now."""
    try:
        connection = sqlite3.connect(db, timeout=0.2, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return False
    return True


def running(db):
    """Trial numbers RUNNING in the SQLite file (read directly: cheap enough to poll)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return [n for (n,) in connection.execute("SELECT number FROM trials "
                                                 "WHERE state = 'RUNNING'")]


def test_a_run_whose_trials_another_runs_heartbeat_failed_drops_them_and_goes_on(make_csv,
                                                                                   tmp_path):
    """A run stopped (SIGSTOP) for longer than the grace period: another run's heartbeat
    (here this process's, on the same study) fails its trial in flight as stale and enqueues
    it again. Resumed, the run drops it in one line, runs the retry, and finishes its count:
    exit 0, no traceback (it was UpdateFinishedTrialError)."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    run = gsearch("run", "--trials", 3, "--data", make_csv(), "--storage", url, "--study", "h",
                  "--heartbeat", 1, "--population", 1, *FAST, cwd=tmp_path)
    try:
        wait_for(lambda: has_study(db, "h") and running(db))
        while True:   # stopped outside a write: holding SQLite's lock it would stall us too
            os.kill(run.pid, signal.SIGSTOP)
            if unlocked(db):
                break
            os.kill(run.pid, signal.SIGCONT)
            time.sleep(0.05)
        stopped = running(db)
        assert run.poll() is None and len(stopped) == 1, "the run ended before it was stopped"
        study = optuna.load_study(study_name="h", storage=open_storage(url, heartbeat=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            wait_for(lambda: optuna.storages.fail_stale_trials(study) or not running(db))
        os.kill(run.pid, signal.SIGCONT)   # 3 beats (3 s) after its last one, failed
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.kill(run.pid, signal.SIGCONT)
            run.kill()
    assert run.returncode == 0 and "Traceback" not in err, err[-3000:]
    dropped = [line for line in err.splitlines() if "dropped here, going on" in line]
    assert len(dropped) == 1 and f"trial #{stopped[0]} was ended (FAIL)" in dropped[0], err
    assert counts(url, "h") == {"finished": 3, "fail": 1, "running": 0, "waiting": 0, "all": 4}
    trials = optuna.load_study(study_name="h", storage=open_storage(url)).trials
    assert [t.state in FINISHED for t in trials if t.user_attrs.get("retry_of") == stopped[0]] \
        == [True]   # its retry, run by this run
