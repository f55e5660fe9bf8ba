"""gsearch serve --workers 2: two processes share the port and each of them serves, SIGTERM stops
them all, and a bad model folder fails before anything is bound. A real server on 127.0.0.1;
the workers are found as the server's children (Linux /proc) and told apart by stopping the
others (SIGSTOP) while one is asked."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_serve import free_port

pytestmark = [pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc"),
              pytest.mark.slow]   # server processes


def workers_of(pid: int) -> list[int]:
    """The server's worker processes: its children started by multiprocessing's spawn."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
        except FileNotFoundError:
            pass
    return workers


def health(port: int, timeout: float) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return r.status if json.loads(r.read())["status"] == "ok" else None
    except OSError:
        return None


def answers_alone(port: int, worker: int, workers: list[int]) -> bool:
    """Whether `worker` answers /health while the other workers are stopped (briefly: uvicorn's
    supervisor replaces a worker that does not answer its ping for 5 s)."""
    others = [w for w in workers if w != worker]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        return health(port, timeout=2) == 200
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


def test_two_workers_each_serve_and_sigterm_stops_them(real_export, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gsearch", "serve", "--model", str(real_export), "--port", str(port),
         "--workers", "2"], stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as a shell's `&`
    try:
        deadline = time.monotonic() + 90
        workers, serving = [], set()
        while time.monotonic() < deadline and proc.poll() is None and len(serving) < 2:
            workers = workers_of(proc.pid)
            if len(workers) == 2:
                serving |= {w for w in workers if w not in serving and answers_alone(port, w, workers)}
            time.sleep(0.3)
        output = Path(log.name).read_text  # by its path: the processes share the log's offset
        assert len(workers) == 2 and serving == set(workers), output()
        for worker in workers:  # the settings went through multiprocessing, not the environment
            assert b"GSEARCH_SERVE" not in Path(f"/proc/{worker}/environ").read_bytes()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, output()
        assert output().rstrip().endswith("server stopped") and "Traceback" not in output(), output()
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_bad_model_folder_fails_before_the_workers_start(cli, tmp_path):
    port = free_port()
    result = cli("serve", "--model", tmp_path, "--workers", 2, "--port", port)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "not a gsearch export" in result.output
    assert health(port, timeout=2) is None  # nothing was bound
