"""Input that could hang, exhaust memory or mislead is answered in one line (issue 35): a table
that is not a regular file (a FIFO, /dev/zero), a decompression bomb or a table larger than
--max-data-mb, a table that runs out of memory all the same; the words that mean an empty cell
(--missing); a --fix outside its range; more --cv folds than the table allows; a full disk
under an upload to `gsearch serve`. No mocks: real commands on real files, real limits."""

from __future__ import annotations

import gzip
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROBE = ("import atexit, sys\n"
         "atexit.register(lambda: print('loaded:', *sorted(m for m in ('torch', 'optuna', "
         "'pandas') if m in sys.modules), file=sys.stderr))\n"
         "from gsearch.cli import main\n"
         "main()\n")


def _env() -> dict:
    """A bare environment that still imports this checkout's gsearch."""
    env = {"PATH": "/usr/bin:/bin"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def gsearch(*args, cwd: Path, probe: bool = True, limit_mb: int | None = None, timeout=60,
            extra_env: dict | None = None):
    """`gsearch ARGS` in a process of its own (with `limit_mb`: under that address-space limit)."""
    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

    command = [sys.executable, "-c", PROBE] if probe else [sys.executable, "-m", "gsearch"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**_env(), **(extra_env or {})}, timeout=timeout,
                          preexec_fn=limited if limit_mb else None)


def one_error(done) -> str:
    """The one `error: ` line of a failed command (and nothing like a traceback)."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("loaded:")]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: "), lines
    return lines[0]


def table_rows(rows: int) -> bytes:
    """A small table of one's own: `rows` rows of two numbers and a label."""
    return b"a,b,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 7, b"xy"[i % 2:i % 2 + 1])
                                     for i in range(rows))


# -- 12: what --data (and predict) may read ----------------------------------------------------

@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_a_device_a_fifo_or_a_folder_as_data_is_refused_in_one_line_before_imports(tmp_path, command):
    """Before: /dev/zero ended in a MemoryError traceback; a FIFO blocked for good."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    work = tmp_path / "work"
    work.mkdir()
    for data, said in (("/dev/zero", "is a device, not a regular file"),
                       (fifo, "is a FIFO (named pipe), not a regular file"),
                       (tmp_path, "is a folder")):
        done = gsearch(command, "--data", data, cwd=work)
        assert said in one_error(done)
        assert done.stderr.splitlines()[-1] == "loaded:", done.stderr
    assert not list(work.iterdir()), "a store was written"


def test_predict_refuses_a_device_or_a_fifo_in_one_line(tmp_path, cli, real_export):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    for path, said in (("/dev/zero", "is a device"), (fifo, "is a FIFO")):
        result = cli("predict", "--model", real_export, path)
        assert result.exit_code == 1 and said in result.output, result.output
        assert "Traceback" not in result.output


def bomb(path: Path, megabytes: int, *, trailer: bool = True) -> Path:
    """A gzip file of `megabytes` MB of table rows in a few KB; `trailer` False: its recorded
    size zeroed (as any gzip of a multiple of 4 GiB has it), so only inflating finds the size."""
    row = b"1,2,x\n"
    chunk = row * ((1 << 20) // len(row))
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"a,b,label\n")
        for _ in range(megabytes):
            f.write(chunk)
    if not trailer:
        data = bytearray(path.read_bytes())
        data[-4:] = bytes(4)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("trailer", [True, False])
def test_a_decompression_bomb_is_refused_while_it_inflates(tmp_path, trailer):
    """A gzip of more than --max-data-mb is refused once the inflated bytes pass the bound,
    before pandas, torch or Optuna load. Without a size in its trailer the refusal can only
    come from counting while inflating: inflating it all first would find the zeroed trailer
    and call the file damaged."""
    table = bomb(tmp_path / "t.csv.gz", 40, trailer=trailer)
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    done = gsearch("run", "--data", table, "--max-data-mb", 4, cwd=work)
    error = one_error(done)
    assert error == (
        f"error: {table} holds more than 4 MB once gunzipped; gsearch reads at most 4 MB of CSV "
        "(--max-data-mb; reading takes about 15-30 MB of memory per MB of CSV): raise "
        "--max-data-mb (or GSEARCH_MAX_DATA_MB) if this machine has the memory, or pass fewer rows")
    assert done.stderr.splitlines()[-1] == "loaded:", done.stderr
    assert time.monotonic() - started < 30
    assert not list(work.iterdir())


def test_the_bound_holds_for_the_loader_a_plain_file_and_the_environment(tmp_path):
    from gsearch.data.header import DataError
    from gsearch.data.load import load_dataset, read_features

    plain = tmp_path / "t.csv"
    plain.write_bytes(table_rows(30_000))   # about 0.3 MB
    with pytest.raises(DataError, match=r"is 0 MB; gsearch reads at most 0.1 MB of CSV"):
        load_dataset(plain, max_mb=0.1)
    packed = bomb(tmp_path / "b.csv.gz", 3, trailer=False)
    with pytest.raises(DataError, match="holds more than 1 MB once gunzipped"):
        read_features(packed, max_mb=1)
    whole = bomb(tmp_path / "w.csv.gz", 3)
    assert len(read_features(whole, max_mb=4)) == 3 * ((1 << 20) // 6)   # within: read whole
    work = tmp_path / "work"
    work.mkdir()
    done = gsearch("run", "--data", plain, cwd=work, extra_env={"GSEARCH_MAX_DATA_MB": "0.1"})
    assert "gsearch reads at most 0.1 MB of CSV" in one_error(done)
    done = gsearch("run", "--data", plain, cwd=work, extra_env={"GSEARCH_MAX_DATA_MB": "lots"})
    assert "GSEARCH_MAX_DATA_MB='lots' is not a positive number" in one_error(done)
    assert not list(work.iterdir())


def test_running_out_of_memory_while_reading_is_said_in_one_line(tmp_path):
    """Under an address-space limit that holds the imports but not the table's rows: one line,
    not a MemoryError traceback. The limit is this machine's own: the imports' peak plus 80 MB,
    and the table takes about 15 times its 15 MB to read."""
    table = tmp_path / "big.csv"
    with open(table, "wb") as f:
        f.write(b"a,b,c,d,e,f,g,h,label\n")
        row = b"0.123456,1.234567,2.345678,3.456789,4.567891,5.678912,6.789123,7.891234,%s\n"
        for i in range(200_000):
            f.write(row % (b"xy"[i % 2:i % 2 + 1]))
    base = subprocess.run([sys.executable, "-c", "import gsearch.cli.run, gsearch.data.load, re; "
                           "print(re.search(r'VmPeak:\\s*(\\d+)', open('/proc/self/status').read())[1])"],
                          capture_output=True, text=True, env=_env(), check=True)
    limit = int(base.stdout) // 1024 + 80
    work = tmp_path / "work"
    work.mkdir()
    done = gsearch("run", "--data", table, cwd=work, probe=False, limit_mb=limit, timeout=120)
    error = one_error(done)
    assert error.startswith(f"error: gsearch ran out of memory reading {table} (") and " MB); " in error
    assert not list(work.iterdir())
