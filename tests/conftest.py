"""Shared fixtures: synthetic GTZAN-shaped CSVs, the real file beside the checkout,
and the switch that turns a missing local service from a skip into a failure in CI."""

from __future__ import annotations

import gzip
import importlib
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gsearch.data.load import BUNDLED_DATA
from gsearch.data.schema import COLUMNS, FEATURE_NAMES, GENRES

SHARED_GTZAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"
REAL_CSV = SHARED_GTZAN / "features_30_sec.csv"
# The same table as the copy bundled in the package: tests that only need real rows use it
# when ../shared is absent (a user's clone).
GTZAN_CSV = REAL_CSV if REAL_CSV.is_file() else BUNDLED_DATA
POSTGRES_URL = os.environ.get("GSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("GSEARCH_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("GSEARCH_TEST_REDIS", "redis://127.0.0.1:6379/0")


def synthetic_frame(classes=GENRES[:4], tracks_per_class=30, segments=None, seed=0,
                    separation=0.6) -> pd.DataFrame:
    """Rows in the Kaggle schema whose features carry the class (learnable, not trivial).
    With `segments=K`, K rows per track named like features_3_sec.csv."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, separation, size=(len(classes), len(FEATURE_NAMES)))
    scale = rng.uniform(0.5, 2000, size=len(FEATURE_NAMES))  # raw features have wild scales
    rows = []
    for c, genre in enumerate(classes):
        for t in range(tracks_per_class):
            track_center = centers[c] + rng.normal(0, 1.0, len(FEATURE_NAMES))
            for k in range(segments or 1):
                x = (track_center + rng.normal(0, 0.5, len(FEATURE_NAMES))) * scale
                name = f"{genre}.{t:05d}.{k}.wav" if segments else f"{genre}.{t:05d}.wav"
                length = 66149 if segments else 661794
                rows.append([name, length, *x, genre])
    return pd.DataFrame(rows, columns=list(COLUMNS))


@pytest.fixture
def make_csv(tmp_path):
    """make_csv(name="f.csv", **synthetic_frame kwargs, frame=None) -> Path."""
    def make(name="features.csv", frame=None, **kwargs) -> Path:
        path = tmp_path / name
        (synthetic_frame(**kwargs) if frame is None else frame).to_csv(path, index=False)
        return path
    return make


@pytest.fixture
def one_thread():
    """As `gsearch --threads 1`: tiny models on several threads only fight over cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_csv(tmp_path_factory) -> Path:
    """The Kaggle features_30_sec.csv as a plain file: ../shared's, or where ../shared is absent
    (a user's clone) the bundled copy unzipped, the same bytes (tests/test_data.py checks its
    SHA-256), so that the tests of the real table run in any clone."""
    if REAL_CSV.is_file():
        return REAL_CSV
    plain = tmp_path_factory.mktemp("gtzan") / REAL_CSV.name
    plain.write_bytes(gzip.decompress(BUNDLED_DATA.read_bytes()))
    return plain


def space_args(space) -> list[str]:
    """The --space option that names `space` (a module-level function of a test module: pytest
    puts tests/ on the path, so the CLI imports it by name, as it imports a user's space)."""
    return [] if space is None else ["--space", f"{space.__module__}:{space.__qualname__}"]


@pytest.fixture
def cli():
    """cli(*args, space=None) -> click Result; exceptions propagate as in a real process.
    `space`: a search space (trial -> TrialConfig) for run and evaluate instead of the real
    one, passed as --space MODULE:FUNCTION."""
    from gsearch.cli import main

    runner = CliRunner()

    def invoke(*args, space=None):
        return runner.invoke(main, [str(a) for a in args] + space_args(space), catch_exceptions=False)
    return invoke


class RaceRetried(UserWarning):
    """A race test (pytest.mark.race) that needed more than one try: the warnings summary of
    a run lists it, so that retries are seen, not hidden by a pass."""


def skip_or_fail(message: str) -> None:
    """Skip a test whose service or test-only package is absent; fail instead where CI sets
    GSEARCH_REQUIRE_SERVICES (CI starts the services and installs requirements-dev.txt, so it
    must not pass by skipping)."""
    if os.environ.get("GSEARCH_REQUIRE_SERVICES"):
        pytest.fail(message + " (GSEARCH_REQUIRE_SERVICES is set)")
    pytest.skip(message)


def require_module(name: str, what: str):
    """The module `name` (a test-only package of requirements-dev.txt), or skip_or_fail
    saying `what` needs it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing = str(e)   # reported outside the except: no "during handling" traceback
    skip_or_fail(f"{what} ({missing}); pip install -r requirements-dev.txt")


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is absent; fail instead when CI sets GSEARCH_REQUIRE_SERVICES."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as e:
        message = f"{name} is not reachable at {host}:{port} ({e}); start it to run this test"
        skip_or_fail(message)


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def mysql_url() -> str:
    require_service("MySQL/MariaDB", "127.0.0.1", 3306)
    return MYSQL_URL


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def real_export(tmp_path_factory) -> Path:
    """A quick model on the real features_30_sec.csv (the bundled copy where ../shared is
    absent), written as export-best writes a model (models.export.save_model), once per test
    session."""
    import torch

    from gsearch.data.load import load_dataset
    from gsearch.models.config import TrialConfig
    from gsearch.models.export import save_model
    from gsearch.models.manifest import ExportManifest
    from gsearch.models.population import TrainData, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ds = load_dataset(GTZAN_CSV)
    config = TrialConfig(n_layers=1, width=128, dropout=0.1, lr=3e-3, epochs=25)
    model, _ = train(config, TrainData(ds.X, ds.y, len(ds.classes)))
    torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("real") / "export"
    save_model(model, ExportManifest(ds.classes, FEATURE_NAMES, (config,), clip_samples=ds.clip_samples,
                                     test_scores={"accuracy": 0.5}), out)
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(name, size): a small tmpfs folder in tmp_path (root only: skipped elsewhere), a full
    disk for real; unmounted after the test."""
    mounted = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=True)


def pytest_sessionfinish(session, exitstatus):
    """A child process a test left running would make the interpreter's exit wait for it
    (multiprocessing joins its children at exit) and the test run never end: kill them, and
    say which, so the test that leaked one is found."""
    import multiprocessing   # here: only at the end of the session
    left = multiprocessing.active_children()
    for child in left:
        child.kill()
        child.join(10)
    if left:
        print(f"\nkilled {len(left)} child process(es) a test left running: "
              + ", ".join(f"{c.name} (pid {c.pid})" for c in left))
