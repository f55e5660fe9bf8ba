"""What a new user meets first: help they can work from, something on screen at once, a
progress bar on any terminal, Ctrl-C at any moment without a traceback."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gsearch.search.space import PARAMETERS, suggest_config


def test_help_shows_the_workflow_and_every_option_is_described(cli):
    top = cli("--help").output
    for step in ("gsearch run --trials 200", "gsearch export-best", "gsearch predict --model export"):
        assert step in top
    listed = top.split("Commands:")[1].strip().splitlines()
    assert len(listed) == 10 and not [line for line in listed if line.endswith("...")]  # none cut short
    for command in ("run", "export-best", "studies", "dashboard", "report", "evaluate", "extract",
                    "predict", "serve", "serve-storage"):
        from gsearch.cli import main

        for param in main.commands[command].params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"gsearch {command} {param.opts[0]} has no description"


def test_fix_lists_the_names_it_accepts(cli):
    assert PARAMETERS == tuple(suggest_config.distributions())
    text = " ".join(cli("run", "--help").output.split())
    assert f"NAME: {', '.join(PARAMETERS)}" in text
    assert "mysql://USER@HOST/DB" in text and "mysql+pymysql" not in text


def _in_a_terminal(args, tmp_path, columns=0, interrupt_after=None, rows=24):
    """gsearch in a pseudo-terminal of `rows` x `columns` (a new one reports 0x0, as `script`
    and some IDE consoles do), interrupted by SIGINT `interrupt_after` seconds after the
    interpreter has started; the output and the exit status."""
    import fcntl
    import struct
    import termios

    if interrupt_after is not None:   # the slowest of three, as a loaded machine varies
        startup = 0.0
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            startup = max(startup, time.perf_counter() - t)
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "gsearch", *map(str, args)], cwd=tmp_path,
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True,
                            # as from a terminal, also where this test runs with SIGINT ignored
                            # (a CI job in the background): gsearch keeps an ignored SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(follower)
    if interrupt_after is not None:   # seconds after the interpreter's own start-up, which
        time.sleep(startup + interrupt_after)   # no program can guard (site, the stdlib)
        proc.send_signal(signal.SIGINT)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:   # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace"), proc.wait(timeout=60)


@pytest.mark.slow   # a whole gsearch run in a new process on a terminal
@pytest.mark.parametrize("rows", [24, 0])   # 0x0: `script`, some IDE and CI consoles
def test_run_says_what_it_loads_at_once_and_draws_its_bar_on_a_zero_column_terminal(
        make_csv, tmp_path, rows):
    out, status = _in_a_terminal(["run", "--trials", 2, "--data", make_csv(), "--storage",
                                  f"sqlite:///{tmp_path / 's.db'}", "--fix", "epochs=30", "--fix",
                                  "width=32"], tmp_path, rows=rows)
    assert status == 0, out
    lines = [line for line in out.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[0].startswith("gsearch run: loading"), lines[:3]
    assert any("search:" in line and "2/2" in line for line in lines), out


@pytest.mark.slow   # a whole gsearch run in a new process
def test_run_into_a_pipe_prints_plain_progress_lines_not_a_bar(make_csv, tmp_path):
    # GSEARCH_PROGRESS_SECONDS=0: a line after every trial (10 s apart by default)
    env = dict(os.environ, GSEARCH_PROGRESS_SECONDS="0")
    env.pop("TQDM_DISABLE", None)
    ran = subprocess.run([sys.executable, "-m", "gsearch", "run", "--trials", "2", "--data",
                          str(make_csv()), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--fix",
                          "epochs=30", "--fix", "width=32", "--population", "1"],
                         cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=120)
    err = ran.stderr.decode()   # bytes: text mode would turn a bar's "\r" into "\n"
    assert ran.returncode == 0, err
    assert "\r" not in err, err   # no carriage-return bar in a log
    progress = [line for line in err.split("\n") if line.startswith("search:")]
    assert [line.split(",")[0] for line in progress] == ["search: 1/2 trials", "search: 2/2 trials"], err
    assert all(" best " in line and " pruned " in line for line in progress), progress


def test_predict_says_what_it_does_at_once_on_a_terminal(real_export, tmp_path):
    import pandas as pd

    from conftest import GTZAN_CSV

    pd.read_csv(GTZAN_CSV).head(2).to_csv(tmp_path / "rows.csv", index=False)
    out, status = _in_a_terminal(["predict", "--model", real_export, tmp_path / "rows.csv"],
                                 tmp_path, columns=80)
    lines = [line for line in out.splitlines() if line.strip()]
    assert status == 0 and len(lines) == 3, out
    assert lines[0] == "gsearch predict: loading the model and 1 path(s) ..."


@pytest.mark.parametrize("after", [0.05, 0.6])
def test_ctrl_c_at_any_moment_prints_no_traceback(tmp_path, after):
    out, status = _in_a_terminal(["run", "--trials", 1, "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                                 tmp_path, columns=80, interrupt_after=after)
    # 130, or killed by SIGINT itself (a shell shows 130 for both): CPython 3.11 exits so when
    # the interrupt landed in an exec() (dataclasses define methods so), even a caught one
    assert status in (130, -signal.SIGINT), out
    assert "Traceback" not in out and "interrupted" in out


def test_storage_comes_from_gsearch_storage_when_not_given(make_csv, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gsearch.cli import main

    monkeypatch.chdir(tmp_path)   # where the default sqlite:///studies.db would go

    url = f"sqlite:///{tmp_path / 'env.db'}"
    runner = CliRunner(env={"GSEARCH_STORAGE": url})
    ran = runner.invoke(main, ["run", "--trials", "1", "--data", str(make_csv()), "--study", "e",
                               "--fix", "epochs=30", "--fix", "width=32"], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "env.db").is_file() and not (tmp_path / "studies.db").exists()
    listed = runner.invoke(main, ["studies"], catch_exceptions=False).output
    assert any(line.split()[:2] == ["e", "1"] for line in listed.splitlines())
