"""Workers SIGKILLed at random moments during a run on PostgreSQL, as an out-of-memory killer
would: the run still ends with exit 0, exactly its trials finished, nothing RUNNING or
WAITING, and each killed trial run once more with its parameters. The short version of
bench/bench_chaos.py (which runs 4 workers, 60 trials and 10 kills)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_chaos.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_chaos", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_killed_workers_under_load_leave_the_run_complete(make_csv, postgres_url):
    figures = load_bench().chaos(postgres_url, make_csv(), workers=3, trials=30, kills=4,
                                 gap=(0.4, 0.9), fixed=["epochs=30", "n_layers=1", "width=32"],
                                 seed=5, timeout=120)
    shown = json.dumps(figures)   # in full on failure
    assert figures["kills"] == 4, shown
    assert figures["exit_code"] == 0, shown
    assert figures["finished"] == 30 and figures["failed"] >= 1, shown
    assert figures["running"] == 0 and figures["waiting"] == 0, shown
    assert figures["failed_not_retried_once"] == [], shown
