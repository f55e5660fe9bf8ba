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
