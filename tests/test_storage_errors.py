"""Every storage that cannot be used fails in one line, fast, with the password masked:
an unknown scheme, closed ports, a wrong database name or password on the real local
servers, SQLite files that cannot be created, a file that is not a journal. No mocks.

PostgreSQL's local server trusts every local user, so a wrong password cannot be provoked
there; MariaDB checks passwords and stands in for it."""

import socket
import time

import pytest
from sqlalchemy.engine import make_url

COMMANDS = {   # each command that opens a storage, with the arguments it needs besides it
    "run": ["--trials", 1],
    "export-best": [],
    "studies": [],
    "report": [],
    "dashboard": ["--port", 1],
    "serve-storage": ["--port", 1],
}


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


def one_line_error(result, started) -> str:
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output
    assert elapsed < 10, f"{elapsed:.1f} s to fail"
    return lines[0]


def with_database(url: str, database: str, password: str | None = None) -> str:
    parsed = make_url(url).set(database=database)
    if password:
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_fails_in_one_line_on_a_closed_port(cli, make_csv, tmp_path, command):
    url = f"postgresql://me:s3cret@127.0.0.1:{closed_port()}/x"
    extra = ["--data", make_csv()] if command == "run" else []
    started = time.monotonic()
    line = one_line_error(cli(command, "--storage", url, *COMMANDS[command], *extra), started)
    assert "postgresql://me:***@127.0.0.1" in line and "server is running" in line


@pytest.mark.parametrize("command", ["run", "studies"])
def test_unknown_scheme_is_one_line(cli, make_csv, command):
    extra = ["--data", make_csv(), "--trials", 1] if command == "run" else []
    started = time.monotonic()
    line = one_line_error(cli(command, "--storage", "nosuchdb://x", *extra), started)
    assert "bad storage URL 'nosuchdb://x'; use for example sqlite:///" in line


def run_with(cli, make_csv, url):
    started = time.monotonic()
    return one_line_error(cli("run", "--trials", 1, "--data", make_csv(), "--storage", url),
                          started)


@pytest.mark.parametrize("scheme", ["mysql", "redis", "grpc"])
def test_closed_ports_of_other_servers(cli, make_csv, scheme):
    port = closed_port()
    url = {"mysql": f"mysql://me:s3cret@127.0.0.1:{port}/x",
           "redis": f"redis://:s3cret@127.0.0.1:{port}/0",
           "grpc": f"grpc://127.0.0.1:{port}"}[scheme]
    line = run_with(cli, make_csv, url)
    assert f"127.0.0.1:{port}" in line and ("***" in line or scheme == "grpc")


def test_postgres_wrong_database(cli, make_csv, postgres_url):
    url = with_database(postgres_url, "gsearch_no_such_db", password="s3cret")
    line = run_with(cli, make_csv, url)
    assert 'database "gsearch_no_such_db" does not exist' in line and ":***@" in line


def test_mysql_wrong_database_and_wrong_password(cli, make_csv, mysql_url):
    line = run_with(cli, make_csv, with_database(mysql_url, "gsearch_no_such_db"))
    assert "Unknown database 'gsearch_no_such_db'" in line
    database = make_url(mysql_url).database
    line = run_with(cli, make_csv, with_database(mysql_url, database, password="s3cret"))
    assert "Access denied" in line and ":***@" in line


def test_sqlite_in_a_missing_or_read_only_folder(cli, make_csv, tmp_path):
    line = run_with(cli, make_csv, f"sqlite:///{tmp_path}/missing/s.db")
    assert "does not exist; create it" in line
    # /proc takes no new file, whoever runs the test (root ignores a folder's mode bits)
    line = run_with(cli, make_csv, "sqlite:////proc/gsearch-test.db")
    assert "/proc" in line and ("read-only" in line or "writable" in line)


def test_a_file_that_is_not_a_journal(cli, make_csv, tmp_path):
    for content in (b"hello\n", bytes(range(256))):
        path = tmp_path / "notes.log"
        path.write_bytes(content)
        line = run_with(cli, make_csv, str(path))
        assert "is not an Optuna journal file" in line
        assert path.read_bytes() == content   # left untouched
    # journal-shaped records that Optuna cannot replay: an unknown operation, a missing field
    for content in (b'{"op_code": 99, "worker_id": "w"}\n', b'{"op_code": 0, "worker_id": "w"}\n'):
        path = tmp_path / "broken.log"
        path.write_bytes(content)
        line = run_with(cli, make_csv, str(path))
        assert "is not a valid Optuna journal file" in line and "restore" in line
        assert path.read_bytes() == content


def test_fix_refuses_values_that_are_not_finite(cli, make_csv, tmp_path):
    for value in ("nan", "inf", "-inf"):
        started = time.monotonic()
        line = one_line_error(cli("run", "--trials", 1, "--data", make_csv(), "--fix",
                                  f"lr={value}", "--storage", f"sqlite:///{tmp_path}/s.db"),
                              started)
        assert f"--fix 'lr={value}'" in line and "pick one inside it" in line
    assert not (tmp_path / "s.db").exists()   # refused before the storage was touched


def test_a_study_name_longer_than_the_storage_keeps(cli, make_csv, postgres_url):
    import optuna

    from gsearch.search.storage import open_storage

    name = "x" * 10_000
    line = one_line_error(
        cli("run", "--trials", 1, "--data", make_csv(), "--storage", postgres_url,
            "--study", name), time.monotonic())
    assert "10000 characters long" in line and "at most 512" in line
    storage = open_storage(postgres_url)
    assert name not in [s.study_name for s in storage.get_all_studies()]
    optuna.create_study(storage=storage, study_name="y" * 512, load_if_exists=True)  # 512 fits
    optuna.delete_study(study_name="y" * 512, storage=storage)


def write_study(cli, make_csv, db) -> bytes:
    """A real study of 2 trials in the SQLite file db, checkpointed: its bytes."""
    import sqlite3

    result = cli("run", "--trials", 2, "--data", make_csv(), "--storage", f"sqlite:///{db}",
                 "--fix", "epochs=20", "--pruner", "none")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db.read_bytes()


def test_a_sqlite_file_with_corrupt_pages_is_refused_before_anything_is_written(
        cli, make_csv, tmp_path):
    db = tmp_path / "s.db"
    data = bytearray(write_study(cli, make_csv, db))
    page = len(data) // 2 // 4096 * 4096            # a page in the middle of the file
    data[page:page + 4096] = bytes((7 * i + 13) % 256 for i in range(4096))
    db.write_bytes(bytes(data))
    for command in ("run", "studies"):
        extra = ["--trials", 1, "--data", make_csv()] if command == "run" else []
        line = one_line_error(cli(command, "--storage", f"sqlite:///{db}", *extra),
                              time.monotonic())
        assert f"SQLite file {db} is corrupt" in line and "backup" in line
        assert db.read_bytes() == bytes(data)     # nothing written
    db.write_bytes(b"this is not a database at all" * 10)
    line = run_with(cli, make_csv, f"sqlite:///{db}")
    assert "is not a SQLite database" in line


def test_an_immutable_or_read_only_sqlite_file_is_refused_before_starting(cli, make_csv,
                                                                            tmp_path):
    import os
    import subprocess

    db = tmp_path / "s.db"
    data = write_study(cli, make_csv, db)
    if os.geteuid() == 0:   # root writes a 0444 file: make it immutable instead
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        undo = ["chattr", "-i", str(db)]
    else:
        db.chmod(0o444)
        undo = ["chmod", "644", str(db)]
    try:
        line = run_with(cli, make_csv, f"sqlite:///{db}")
        assert "is read-only or immutable" in line
        assert db.read_bytes() == data
    finally:
        subprocess.run(undo, check=True)


CREATE = """
import sys, time
import optuna
from gsearch.search.storage import open_storage
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
storage = open_storage(f"sqlite:///{sys.argv[1]}", heartbeat=10)
optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
"""


@pytest.mark.slow
def test_three_processes_creating_one_fresh_sqlite_file_at_once(tmp_path):
    import subprocess
    import sys

    for attempt in range(4):
        db = tmp_path / f"fresh{attempt}.db"
        start = time.time() + 3   # after the three have imported Optuna
        procs = [subprocess.Popen([sys.executable, "-c", CREATE, str(db), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(3)]
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out
