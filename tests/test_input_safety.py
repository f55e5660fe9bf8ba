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


def test_predict_refuses_a_device_a_fifo_or_a_bomb_in_one_line(tmp_path, cli, real_export):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    for path, said in (("/dev/zero", "is a device"), (fifo, "is a FIFO")):
        result = cli("predict", "--model", real_export, path)
        assert result.exit_code == 1 and said in result.output, result.output
        assert "Traceback" not in result.output
    from gsearch.data.schema import FEATURE_NAMES

    packed = bomb(tmp_path / "rows.csv.gz", 3, trailer=False, header=",".join(FEATURE_NAMES).encode())
    result = cli("predict", "--model", real_export, packed, "--max-data-mb", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip() == (
        f"error: {packed} holds more than 1 MB once gunzipped; gsearch reads at most 1 MB of CSV "
        "(--max-data-mb; reading takes about 15-30 MB of memory per MB of CSV): raise "
        "--max-data-mb (or GSEARCH_MAX_DATA_MB) if this machine has the memory, or pass fewer rows")


def bomb(path: Path, megabytes: int, *, trailer: bool = True, header: bytes = b"a,b,label") -> Path:
    """A gzip file of `megabytes` MB of table rows in a few KB; `trailer` False: its recorded
    size zeroed (as any gzip of a multiple of 4 GiB has it), so only inflating finds the size."""
    row = b"1,2,x\n"
    chunk = row * ((1 << 20) // len(row))
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header + b"\n")
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
    with pytest.raises(DataError, match=r"is 0.3 MB; gsearch reads at most 0.1 MB of CSV"):
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


# -- 19: a full disk under an upload to `gsearch serve` -----------------------------------------

@pytest.fixture
def small_tmpdir(tmpfs):
    """A 1 MB tmpfs (root only: skipped elsewhere), as the server's TMPDIR."""
    return tmpfs("tmpdir", "1m")


@pytest.mark.slow
def test_an_upload_to_a_server_whose_tmpdir_is_full_is_507(tmp_path, real_export, small_tmpdir):
    """Before: 'could not be read as JSON'-like 400s. A real server, a real full tmpfs: the
    audio upload (Starlette spools a form over 1 MB to TMPDIR) is answered 507 with the JSON
    error body every refusal has, and the server goes on answering."""
    import json
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "gsearch", "serve", "--model", str(real_export),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**_env(), "TMPDIR": str(small_tmpdir)})

    def request(method, path, body=None, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if request("GET", "/health")[1].get("audio_ready"):
                    break
            except OSError:
                pass
            log.seek(0)
            assert proc.poll() is None and time.monotonic() < deadline, log.read()
            time.sleep(0.2)
        try:   # fill what is left
            with open(small_tmpdir / "filler", "ab") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        # over Starlette's 1 MB in-memory spool (the form meets the full disk), and under it
        # (the staged upload meets it)
        for song in (b"RIFF" + bytes(3 << 20), b"RIFF" + bytes(100_000)):
            body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="song.wav"'
                    b'\r\n\r\n' + song + b"\r\n--b--\r\n")
            status, answer = request("POST", "/predict/audio", body,
                                     {"Content-Type": "multipart/form-data; boundary=b"})
            assert status == 507 and set(answer) == {"error"}, (status, answer)
            assert "out of disk space" in answer["error"] and "TMPDIR" in answer["error"], answer
        assert request("GET", "/health")[0] == 200
    finally:
        proc.kill()
        proc.wait()
        log.close()


# -- 19: --fix outside its range, more --cv folds than the table allows -----------------------

@pytest.mark.parametrize("fix, said", [
    ("lr=0", "lr takes 0.0001 to 0.03, on a log scale (so above 0)"),
    ("lr=-1", "lr takes 0.0001 to 0.03, on a log scale (so above 0)"),
    ("weight_decay=0", "weight_decay takes 1e-05 to 0.1, on a log scale (so above 0)"),
    ("width=0", "width takes 32 to 256, on a log scale (so above 0)"),
])
def test_a_fix_outside_its_range_is_one_line_naming_the_range(tmp_path, cli, make_csv, fix, said):
    """Before: a 40-line traceback (Optuna's ValueError: a log scale has no 0)."""
    from gsearch.search.space import SearchSpace

    name = fix.split("=")[0]
    distribution = SearchSpace().distributions()[name]   # the range said is the space's own
    assert f"{distribution.low:g} to {distribution.high:g}" in said
    db = tmp_path / "s.db"
    result = cli("run", "--data", make_csv(), "--storage", f"sqlite:///{db}", "--trials", 1,
                 "--fix", fix)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = result.output.strip().splitlines()[-1:]
    assert line.startswith(f"error: --fix '{fix}': ") and said in line, line
    assert not db.exists()
    # no table decides it: answered before pandas, torch and Optuna load; a --range is said
    work = tmp_path / "work"
    work.mkdir()
    done = gsearch("run", "--fix", fix, "--range", f"{name}=1e-6:0.5", cwd=work)
    assert f"{name} takes 1e-06 to 0.5, on a log scale (so above 0)" in one_error(done)
    assert done.stderr.splitlines()[-1] == "loaded:", done.stderr
    assert not list(work.iterdir())


def most_folds(message: str) -> int:
    return int(message.split("allow at most ")[1].split()[0])


@pytest.mark.parametrize("group", [False, True])
def test_more_cv_folds_than_the_table_allows_is_one_line_with_the_most_it_allows(
        tmp_path, cli, make_csv, group):
    """Before: a 49-line traceback from scikit-learn after the study was opened. The most folds
    said is the most that work: one more is refused."""
    import numpy as np
    import pandas as pd

    from gsearch.data.header import DataError
    from gsearch.data.load import load_dataset
    from gsearch.search.protocol import Protocol

    if group:   # 12 sessions: the test split takes some, the folds can have the rest
        rng = np.random.default_rng(0)
        path = make_csv(frame=pd.DataFrame({"a": rng.random(120), "session": np.arange(120) % 12,
                                            "label": np.arange(120) % 2}))
        options, ds = ["--group", "session"], load_dataset(path, group="session")
    else:
        path = make_csv()
        options, ds = [], load_dataset(path)
    db = tmp_path / "s.db"
    for command in ("run", "evaluate"):
        result = cli(command, "--data", path, *options, "--storage", f"sqlite:///{db}",
                     "--trials", 1, "--cv", 200)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("error: --cv 200: the ") and "pass --cv" in line, line
        assert ("values of column 'session'" in line) == group, line
        assert not db.exists()
    most = most_folds(line)
    group_of = {"group": "session"} if group else {}
    assert len(Protocol(cv=most, **group_of).trial_data(ds)) == most
    with pytest.raises(DataError, match=f"allow at most {most} folds"):
        Protocol(cv=most + 1, **group_of).train_rows(ds)


# -- 20: the words that mean an empty cell (--missing) -----------------------------------------

def tiny(trial):
    from gsearch.models.config import TrialConfig

    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 16), epochs=3)


def words_table(path: Path) -> Path:
    """Labels NA, None, ok and fine; a text feature whose values include NA and null."""
    import numpy as np
    import pandas as pd

    n = 120
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=n) + (np.arange(n) % 4),
                          "kind": np.array(["NA", "null", "red"])[np.arange(n) % 3],
                          "label": np.array(["NA", "None", "ok", "fine"])[np.arange(n) % 4]})
    frame.to_csv(path, index=False)
    return path


def test_the_default_missing_words_and_missing_words_of_ones_own(tmp_path):
    """By default NA, None, null (any case) are empty cells: rows labelled NA or None are left
    out and a text feature's NA is its missing slot. --missing '' keeps them as values;
    --missing NA only NA besides an empty cell."""
    from gsearch.data.load import load_dataset

    path = words_table(tmp_path / "t.csv")
    default = load_dataset(path)
    assert default.classes == ("fine", "ok") and default.unlabelled == 60
    assert default.vocabulary["kind"] == ("red",)
    values = load_dataset(path, missing="")
    assert values.classes == ("NA", "None", "fine", "ok") and values.unlabelled == 0
    assert values.vocabulary["kind"] == ("NA", "null", "red")
    na = load_dataset(path, missing=" na ")
    assert na.classes == ("None", "fine", "ok") and na.unlabelled == 30
    assert na.vocabulary["kind"] == ("null", "red")
    assert load_dataset(path, missing="").sha256 == default.sha256   # the same file


def test_missing_words_are_recorded_and_export_and_predict_read_the_table_the_same_way(
        tmp_path, cli):
    """run --missing '' records the words in the study; export-best reads the table with them
    (else its rows and classes would differ from the study's), and predict reads them from
    model.json: a row whose kind is NA is the category NA, not an empty cell."""
    import json

    import optuna

    from gsearch.models.predict import ExportedModel, predict_csv

    path, db = words_table(tmp_path / "t.csv"), f"sqlite:///{tmp_path / 's.db'}"
    ran = cli("run", "--data", path, "--missing", "", "--storage", db, "--trials", 2,
              "--pruner", "none", space=tiny)
    assert ran.exit_code == 0, ran.output
    assert "4 classes" in ran.output, ran.output
    assert optuna.load_study(study_name="t", storage=db).user_attrs["missing_words"] == ""
    again = cli("run", "--data", path, "--storage", db, "--trials", 1, space=tiny)   # other words
    assert again.exit_code == 1 and again.output.strip().splitlines()[-1] == (
        "error: study 't' read its table with --missing '', this run with the default words (no "
        "--missing): resume it with --missing '', or pass a new --study"), again.output
    assert len(optuna.load_study(study_name="t", storage=db).trials) == 2
    out = tmp_path / "model"
    exported = cli("export-best", "--storage", db, "--out", out, "--ensemble", 1)
    assert exported.exit_code == 0, exported.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["NA", "None", "fine", "ok"] and meta["reading"] == {"missing": ""}
    model = ExportedModel(out, "torch")
    assert model.missing == ""
    rows = tmp_path / "rows.csv"
    rows.write_text("x,kind\n0.5,NA\n0.5,\n")
    [as_na, empty] = predict_csv(model, rows)
    [as_empty, _] = predict_csv(model, rows, missing="NA")   # NA read as an empty cell
    assert as_na.probabilities != empty.probabilities   # the category NA is not the empty slot
    assert as_empty.probabilities == pytest.approx(empty.probabilities, abs=1e-6)
    result = cli("predict", "--model", out, rows, "--missing", "NA", "--json")
    assert result.exit_code == 0, result.output


def test_evaluate_reads_the_table_with_the_missing_words_and_its_exports_record_them(tmp_path, cli):
    import json

    path = words_table(tmp_path / "t.csv")
    done = cli("evaluate", "--data", path, "--missing", "", "--split-seeds", 42, "--trials", 1,
               "--storage", f"sqlite:///{tmp_path / 'e.db'}", "--out", tmp_path / "ev",
               "--ensemble", 1, space=tiny)
    assert done.exit_code == 0, done.output
    meta = json.loads((tmp_path / "ev" / "split42" / "model.json").read_text())
    assert meta["classes"] == ["NA", "None", "fine", "ok"] and meta["reading"] == {"missing": ""}
