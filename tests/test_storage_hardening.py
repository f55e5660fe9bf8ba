"""Breaks of the stored studies found by an attack pass (issue 35), for real, no mocks: a study
deleted while a run searches it (refused unless --force, checked after deleting, the run then
stops in one line), several runs creating one server database's tables at once, a full disk
(a 600 KB tmpfs), a corrupt SQLite file too large for the quick check at opening."""

import datetime
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings

import optuna
import pytest
import sqlalchemy

from gsearch.search._spawn import start_workers_server
from gsearch.search.storage import open_storage

# every test here runs a search beside its break (a deleter, a full disk, racing processes)
pytestmark = pytest.mark.slow

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FAST = ("--fix", "epochs=30", "--seed", "3", "--pruner", "none")


def states(url, name) -> dict[str, int]:
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    counts = {"finished": sum(t.state in FINISHED for t in trials), "all": len(trials)}
    for state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        counts[state.name.lower()] = sum(t.state == state for t in trials)
    return counts


def names(url) -> list[str]:
    return [s.study_name for s in open_storage(url).get_all_studies()]


def wait_for(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- item 17: several runs creating one server database's tables at once ---------------------

def _open_at_once(url, barrier, results):
    """A run's first steps on a fresh database: open the storage (RDBStorage creates Optuna's
    tables), create or load the study."""
    barrier.wait()
    try:
        optuna.create_study(storage=open_storage(url), study_name="s", load_if_exists=True)
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("server", ["postgres_url", "mysql_url"])
def test_three_processes_creating_one_fresh_server_database_at_once(request, server):
    """10 rounds of 3 processes released together on a fresh database each: before the lock,
    every round failed on both (MariaDB: "Table 'studies' already exists"; PostgreSQL: a
    UniqueViolation on pg_type_typname_nsp_index), with a hint about host and password."""
    base = sqlalchemy.engine.make_url(request.getfixturevalue(server))
    if base.drivername == "mysql":
        base = base.set(drivername="mysql+pymysql")
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    # The workers' own context (a forkserver that imported Optuna once): forking this process,
    # which holds other tests' threads, could copy a lock another thread held and hang the child
    ctx = start_workers_server()
    failures = []
    try:
        for round_ in range(10):
            database = f"gsearch_fresh_{uuid.uuid4().hex[:12]}"
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE DATABASE {database}")
            try:
                url = base.set(database=database).render_as_string(hide_password=False)
                barrier, results = ctx.Barrier(3), ctx.Queue()
                procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results))
                         for _ in range(3)]
                for proc in procs:
                    proc.start()
                try:
                    outcomes = [results.get(timeout=60) for _ in procs]
                finally:   # a child that hangs fails this test, never the whole test run
                    for proc in procs:
                        proc.join(30)
                        if proc.is_alive():
                            proc.kill()
                            proc.join()
                failures += [f"round {round_}: {o}" for o in outcomes if o != "ok"]
                assert names(url) == ["s"]
            finally:
                force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
                with admin.connect() as connection:
                    connection.exec_driver_sql(f"DROP DATABASE {database}{force}")
    finally:
        admin.dispose()
    assert not failures, "\n".join(failures)


# -- item 14: a full disk -------------------------------------------------------------------

@pytest.fixture
def full_disk(tmpfs):
    """A 600 KB tmpfs (root only: skipped elsewhere)."""
    return tmpfs("small", "600k")


@pytest.mark.parametrize("kind, workers", [("sqlite", 1), ("sqlite", 2), ("journal", 1),
                                           ("journal", 2)])
def test_a_full_disk_stops_a_run_in_one_line_and_ends_its_trials(cli, make_csv, full_disk,
                                                                   kind, workers):
    """Before: SQLite, exit 1 after a 95-line traceback with 2 trials RUNNING; a journal file,
    4 trials RUNNING for good (no heartbeats: nothing ever ends them). SQLite's write-ahead
    log may hold the last free byte, so that nothing can end the trials of several workers:
    those have heartbeats, and the next run fails them (and runs them again)."""
    url = f"sqlite:///{full_disk / 's.db'}" if kind == "sqlite" else str(full_disk / "s.log")
    result = cli("run", "--trials", 100_000, "--workers", workers, "--storage", url,
                 "--data", make_csv(), *FAST)
    assert result.exit_code == 1, result.output[-3000:]
    assert "Traceback" not in result.output
    [last] = [line for line in result.output.splitlines() if line.startswith("error: ")]
    path = full_disk / ("s.db" if kind == "sqlite" else "s.log")
    assert last.startswith(f"error: the disk holding {path} is full ("), last
    assert "free space there and run again" in last and "--trials" in last, last
    counts = states(url, "gtzan-mlp")   # the store is intact and reads
    assert counts["fail"] + counts["running"] >= 1, counts
    if kind == "journal" or workers == 1:
        assert counts["running"] == 0, counts
        return
    subprocess.run(["mount", "-o", "remount,size=8m", str(full_disk)], check=True)
    storage = open_storage(url, heartbeat=1)   # what the next run's heartbeat does
    study = optuna.load_study(study_name="gtzan-mlp", storage=storage)
    with warnings.catch_warnings():   # Optuna's heartbeat is experimental
        warnings.simplefilter("ignore")
        for _ in range(2):   # a trial without a heartbeat row: once seen, then 3 beats later
            optuna.storages.fail_stale_trials(study)
            time.sleep(3.5)
        optuna.storages.fail_stale_trials(study)
    assert states(url, "gtzan-mlp")["running"] == 0


# -- item 19: a corrupt SQLite file too large for the quick check ------------------------------

def test_a_corrupt_sqlite_file_over_the_quick_check_size_is_one_line_and_untouched(
        cli, make_csv, tmp_path):
    """Files over QUICK_CHECK_MAX_BYTES get the header check only when opened; the damage is
    met by a later read (here the first read of the trials): before, a 117-line traceback."""
    from gsearch.search.storage import QUICK_CHECK_MAX_BYTES

    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    csv = make_csv()
    made = cli("run", "--trials", 2, "--data", csv, "--storage", url, *FAST)
    assert made.exit_code == 0, made.output
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        [(root,)] = connection.execute("SELECT rootpage FROM sqlite_master WHERE "
                                       "name = 'trial_system_attributes'").fetchall()
        page = connection.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:   # that table's first page: garbage
        f.seek((root - 1) * page)
        f.write(bytes((7 * i + 13) % 256 for i in range(page)))
    os.truncate(db, QUICK_CHECK_MAX_BYTES + 50 * 2**20)   # sparse: 306 MB on 0.1 MB of disk

    def fingerprint() -> str:
        digest = hashlib.sha256()
        with open(db, "rb") as f:
            while chunk := f.read(2**24):
                digest.update(chunk)
        return digest.hexdigest()

    before = fingerprint()
    for args in (["run", "--trials", 1, "--data", csv, *FAST], ["studies"],
                 ["export-best", "--out", tmp_path / "out"]):
        line = one_line(cli(*args, "--storage", url))
        assert f"SQLite file {db} is corrupt (database disk image is malformed)" in line, line
        assert "backup" in line and ".recover" in line
        assert fingerprint() == before, args   # nothing written


# -- item 15: `studies --delete` during a run ------------------------------------------------

@pytest.mark.parametrize("server, workers", [("postgres_url", 2), ("journal", 1)])
def test_deleting_a_study_a_run_searches_is_refused_unless_forced_and_the_run_stops_in_one_line(
        cli, make_csv, tmp_path, request, server, workers):
    """PostgreSQL with 2 workers and heartbeats; a journal file (no heartbeats: trials written
    to recently are live) with the trials in the run's own process. Optuna's delete_study
    deleted nothing, and said "deleted", while workers wrote; once it deleted, the run died
    in a 64-line KeyError."""
    url = str(tmp_path / "s.log") if server == "journal" else request.getfixturevalue(server)
    name = f"delete-{uuid.uuid4().hex[:8]}"
    args = ["run", "--trials", 100_000, "--workers", workers, "--heartbeat", 2, "--storage", url,
            "--study", name, "--data", make_csv(), *FAST]
    run = subprocess.Popen([sys.executable, "-m", "gsearch", *map(str, args)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: name in names(url) and states(url, name)["finished"] >= 2)
        refused = cli("studies", "--storage", url, "--delete", name)
        line = one_line(refused)
        assert f"study '{name}' in {url} is being searched" in line and "--force" in line, line
        assert name in names(url) and states(url, name)["all"] >= 2
        forced = cli("studies", "--storage", url, "--delete", name, "--force")
        assert forced.exit_code == 0, forced.output
        assert forced.output.startswith(f"deleted study '{name}' (")
        assert name not in names(url)   # it says so only when it is gone
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 1 and "Traceback" not in err, err[-3000:]
    lines = [line for line in err.strip().splitlines() if not line.startswith("search: ")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"error: study '{name}' was deleted from {url} while this run was "
                               "searching it; "), lines[0]
    assert name not in names(url)


def test_trials_a_dead_run_left_running_do_not_hold_a_study(cli, tmp_path):
    """RUNNING trials whose heartbeat (or start) is old, and that nothing writes to, are a
    dead run's: the study is deleted without --force, and the count is what was deleted."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url, heartbeat=1)
    study = optuna.create_study(study_name="left", storage=storage)
    old = datetime.datetime.now() - datetime.timedelta(minutes=5)
    for beaten in (True, False):
        trial_id = storage.create_new_trial(study._study_id, optuna.trial.FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, datetime_start=old,
            datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
            intermediate_values={}, trial_id=-1))
        if beaten:
            storage.record_heartbeat(trial_id)
    with warnings.catch_warnings():   # a heartbeat storage outside Study.optimize
        warnings.simplefilter("ignore")
        study.tell(study.ask(), 1.0)
    with sqlite3.connect(tmp_path / "s.db") as connection:   # that beat, 5 minutes ago
        connection.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-5 minutes')")
    started = time.monotonic()
    deleted = cli("studies", "--storage", url, "--delete", "left")
    assert deleted.exit_code == 0, deleted.output
    assert deleted.output.strip() == f"deleted study 'left' (3 trials) from {url}"
    assert time.monotonic() - started < 10   # watched for 2 s, no more
    assert names(url) == []
    with sqlite3.connect(tmp_path / "s.db") as connection:   # nothing of it left behind
        for table in ("trials", "trial_heartbeats", "trial_values", "study_directions"):
            assert connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table
