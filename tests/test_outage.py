"""A database outage during a multi-worker run, for real: PostgreSQL behind a TCP proxy that
is killed (listener closed, every connection cut) and started again. A short outage is
ridden out (--storage-retry); a long one stops the run in one line; a later run fails and
re-runs every trial left RUNNING, with or without a heartbeat row. No mocks."""

import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings

import optuna
import pytest

from gsearch.search.storage import open_storage

pytestmark = pytest.mark.slow   # a database proxy killed for seconds

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FAST = ("--fix", "epochs=30", "--seed", "3", "--pruner", "none")


class Proxy:
    """127.0.0.1:port -> 127.0.0.1:target, in a thread of its own. stop() closes the listener
    and cuts every connection (the database is gone: connects are refused); start() listens
    on the same port again. It shuts itself down after `lifetime` seconds whatever happens."""

    def __init__(self, target: int, lifetime: float = 300.0):
        self.target, self.server, self.connections = target, None, set()
        with socket.create_server(("127.0.0.1", 0)) as probe:
            self.port = probe.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.loop.call_soon_threadsafe(self.loop.call_later, lifetime, self._expire)
        self.start()

    def _do(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def start(self) -> None:
        async def listen():
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                     reuse_address=True)
        self._do(listen())

    def stop(self) -> None:
        self._do(self._close())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _expire(self) -> None:
        self.loop.create_task(self._close())

    async def _close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.connections):
            writer.transport.abort()
        self.connections.clear()

    async def _serve(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections.update((writer, up_writer))

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def proxy(postgres_url):
    from sqlalchemy.engine import make_url

    proxy = Proxy(make_url(postgres_url).port or 5432)
    yield proxy
    proxy.close()


def through(url: str, port: int) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(port=port).render_as_string(hide_password=False)


def states(url, name):
    try:
        trials = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    except Exception:   # the study is not created yet
        return {}
    counts = {"finished": sum(t.state in FINISHED for t in trials), "all": len(trials)}
    for state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        counts[state.name.lower()] = sum(t.state == state for t in trials)
    return counts


def gsearch(*args):
    return subprocess.Popen([sys.executable, "-m", "gsearch", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_ten_second_outage_is_ridden_out(proxy, postgres_url, make_csv):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    url = through(postgres_url, proxy.port)
    run = gsearch("run", "--workers", 2, "--trials", 30, "--storage", url, "--study", name,
                  "--data", make_csv(), "--heartbeat", 2, "--storage-retry", 40, *FAST)
    try:
        wait_for(lambda: states(postgres_url, name).get("finished", 0) >= 3)
        proxy.stop()
        time.sleep(10)
        proxy.start()
        out, err = run.communicate(timeout=180)
    finally:
        run.kill()
    assert run.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "retrying for up to 40 s" in err, err[-6000:]
    counts = states(postgres_url, name)
    # the outage outlasted 3 beats (6 s): still no trial was taken for dead when it ended. A
    # trial being created as the connection dropped is created twice (Outage's docstring): its
    # spare, never given a parameter or a score, is failed; it is the only failure allowed
    # (seen once in CI under load: 31 trials, the spare failed)
    trials = optuna.load_study(study_name=name, storage=open_storage(postgres_url)).trials
    spares = [t for t in trials if t.state == TrialState.FAIL and not t.params and not t.intermediate_values]
    assert len(spares) <= 1 and counts == {"finished": 30, "all": 30 + len(spares), "fail": len(spares),
                                           "running": 0, "waiting": 0}, counts
    optuna.delete_study(study_name=name, storage=open_storage(postgres_url))


def test_a_heartbeat_check_retried_through_an_outage_fails_no_trial(proxy, postgres_url):
    """When the server is back every heartbeat is as old as the outage, this process's own
    too. The stale-trial check that was itself retried through the outage (the first call to
    succeed afterwards) must not take the trials for dead: a 2-worker run riding out a
    2-minute outage failed all its own trials in flight that way."""
    name = f"outage-{uuid.uuid4().hex[:8]}"
    storage = open_storage(through(postgres_url, proxy.port), heartbeat=1, retry=30)
    study = optuna.create_study(study_name=name, storage=storage)
    with warnings.catch_warnings():   # heartbeats outside Study.optimize; experimental
        warnings.simplefilter("ignore")
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
        proxy.stop()
        back = threading.Timer(4, proxy.start)   # past the grace period (3 beats: 3 s)
        back.start()
        try:
            optuna.storages.fail_stale_trials(study)   # retried until the server is back
        finally:
            back.join()
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
    optuna.delete_study(study_name=name, storage=open_storage(postgres_url))


def test_a_long_outage_stops_in_one_line_and_a_later_run_recovers_every_trial(
        proxy, postgres_url, make_csv):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    url = through(postgres_url, proxy.port)
    csv = make_csv()
    run = gsearch("run", "--workers", 2, "--trials", 30, "--storage", url, "--study", name,
                  "--data", csv, "--heartbeat", 2, "--storage-retry", 3, *FAST)
    try:
        wait_for(lambda: states(postgres_url, name).get("finished", 0) >= 3)
        proxy.stop()   # for good
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 1
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: lost the connection to storage") and "--storage-retry" in last
    # and the --trials of the rerun that finishes the run's count
    done = re.search(r"\((\d+) of this run's 30 trials finished: --trials (\d+) finishes its "
                     r"count\)$", last)
    assert done and int(done[1]) + int(done[2]) == 30, last
    assert int(done[1]) <= states(postgres_url, name)["finished"]
    # a trial that never got a heartbeat row, as a run killed right after creating it leaves
    storage = open_storage(postgres_url)
    study = optuna.load_study(study_name=name, storage=storage)
    orphan = storage.create_new_trial(study._study_id, optuna.trial.FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, datetime_start=None,
        datetime_complete=None, params={}, distributions={}, user_attrs={},
        system_attrs={"gsearch:worker": "deadrun/0"}, intermediate_values={}, trial_id=-1))
    stranded = states(postgres_url, name)["running"]
    assert stranded >= 1
    # heartbeats of 1 s: stranded trials are failed at this run's first beat, the one with no
    # heartbeat row once seen unchanged for 3 s; it runs their retries, then it is stopped (a
    # deadline from its start, as before, left it no time at all on a loaded machine)
    later = gsearch("run", "--trials", 10_000, "--timeout", 300, "--storage", postgres_url,
                    "--study", name, "--data", csv, "--heartbeat", 1, "--population", 2, *FAST)
    try:
        wait_for(lambda: storage.get_trial(orphan).state == TrialState.FAIL and stranded <= sum(
            "retry_of" in t.user_attrs and t.state in FINISHED for t in study.trials), 240)
        later.send_signal(signal.SIGTERM)
        out, err = later.communicate(timeout=60)
    finally:
        later.kill()
    assert later.returncode == 130 and "Traceback" not in err, err[-3000:]
    counts = states(postgres_url, name)
    assert counts["running"] == 0 and counts["waiting"] == 0, counts
    assert storage.get_trial(orphan).state == TrialState.FAIL
    retried = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert len(retried) >= stranded
    optuna.delete_study(study_name=name, storage=storage)


def test_live_trials_of_another_run_are_not_taken_for_stranded(postgres_url):
    """Trials with no heartbeat row but alive (a run with --heartbeat 0 on the same study,
    trials of 5-10 s on the bundled data under --cv 3) write their curves, and a run with heartbeats of 1 s
    (3 s of silence: stranded) leaves them alone."""
    name = f"outage-{uuid.uuid4().hex[:8]}"
    args = ["--storage", postgres_url, "--study", name, "--population", 1, "--pruner", "none",
            "--fix", "epochs=100", "--fix", "width=256", "--fix", "n_layers=3",
            "--fix", "batch_size=32", "--cv", 3, "--seed", "3"]
    first = gsearch("run", "--trials", 1, "--heartbeat", 0, *args)   # creates the study
    assert first.wait(timeout=120) == 0, first.stderr.read()[-3000:]
    silent = gsearch("run", "--trials", 3, "--heartbeat", 0, *args)
    beating = gsearch("run", "--trials", 3, "--heartbeat", 1, *args)
    for run in (silent, beating):
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    counts = states(postgres_url, name)
    assert counts == {"finished": 7, "all": 7, "fail": 0, "running": 0, "waiting": 0}, counts
    trials = optuna.load_study(study_name=name, storage=open_storage(postgres_url)).trials
    assert max(t.duration.total_seconds() for t in trials) > 3   # longer than 3 beats
    optuna.delete_study(study_name=name, storage=open_storage(postgres_url))
