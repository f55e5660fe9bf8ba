"""Storages, studies and the guard that ties a study to one data file and split."""

from __future__ import annotations

import re
import signal
import warnings
from pathlib import Path
from typing import Sequence

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from gsearch import GsearchError
from gsearch.data.load import Dataset

DEFAULT_STORAGE = "sqlite:///studies.db"
DEFAULT_STUDY = "gtzan-mlp"
# Trials trained at once as one batched model (gsearch run --population). On 1 CPU thread,
# over the default space, CPU ms per trial-epoch was 41.7 (1, sequential), 37.5 (4),
# 36.2 (8), 35.3 (16): most of the gain at 4, where TPE and the pruner see results soonest.
DEFAULT_POPULATION = 4
OBJECTIVE_NAME = "validation accuracy"
# Study user attributes that must match between runs and exports of one study
# (cv: trials' values are only comparable under one evaluation protocol).
GUARDED = ("data_sha256", "split_seed", "test_size", "val_size", "cv")


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
RETRIES = 3  # times a trial whose worker died is run again


class _RetryStale(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker stopped beating; the copy also records
    `retry_of` (the dead trial's number) as a user attribute, visible in the dashboard."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial.user_attrs = {**trial.user_attrs, "retry_of": trial.number}
        super().__call__(study, trial)


def _sqlite_wal(engine: sqlalchemy.Engine) -> None:
    """Write-ahead log: readers never block the writer and a commit costs no fsync, so
    several workers share one file without "database is locked" and a trial's per-epoch
    reports stay cheap. The journal mode is stored in the file; synchronous is per connection."""
    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    engine.dispose()  # reconnect the pool through the listener


def _check_file(url: str, path: Path, must_exist: bool) -> None:
    if not path.parent.is_dir():
        raise GsearchError(f"folder {path.parent} for storage {url} does not exist; create it "
                           "or choose another path")
    if must_exist and not path.is_file():
        raise GsearchError(f"no study storage at {path}; run 'gsearch run' first or pass "
                           "--storage")


def _journal_file(url: str, must_exist: bool) -> optuna.storages.BaseStorage:
    """Optuna's journal storage in a local file (no heartbeats in Optuna's journal storages)."""
    from optuna.storages.journal import JournalFileBackend

    _check_file(url, Path(url), must_exist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalFileBackend(url))


def _grpc_storage(url: str) -> optuna.storages.BaseStorage:
    """A client of `gsearch serve-storage` (Optuna's gRPC storage proxy)."""
    hostport = url.removeprefix("grpc://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise GsearchError(f"bad storage URL {url!r}; use grpc://HOST:PORT of a "
                           "'gsearch serve-storage'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        proxy.wait_server_ready(timeout=3)
    except ImportError:
        raise GsearchError("grpc:// needs grpcio; pip install grpcio protobuf") from None
    except ConnectionError:
        raise GsearchError(f"cannot reach the storage proxy at {url}; start it with "
                           "'gsearch serve-storage' or check the address") from None
    return proxy


def _redis_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on Redis (no heartbeats in Optuna's journal storages)."""
    import redis

    from optuna.storages.journal import JournalRedisBackend

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except (redis.RedisError, ValueError) as e:
        raise GsearchError(f"cannot reach Redis storage {safe_url(url)}: "
                           f"{safe_url(_first_line(e))}; check the URL and that the server "
                           "is running") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalRedisBackend(url))


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def has_heartbeats(url: str) -> bool:
    """Whether open_storage(url, heartbeat=...) gives trials heartbeats: RDB storages do;
    Optuna's journal storages (Redis, a .log file) and its gRPC proxy do not."""
    return "://" in url and not _is_redis(url) and not url.startswith("grpc://")


def open_storage(url: str, *, must_exist: bool = False,
                 heartbeat: int | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: sqlite:// (WAL), postgresql://, mysql:// (RDBStorage;
    mysql:// means PyMySQL), redis:// or a file path ending in .log (JournalStorage),
    grpc://host:port (a `gsearch serve-storage` proxy).

    With `heartbeat` (seconds), running trials of a RDB storage beat that often; one whose
    process died is marked failed after 3 missed beats by the next trial any worker starts,
    and run again (up to RETRIES times, with user attribute `retry_of`).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # gsearch prints its own progress
    if _is_redis(url):
        return _redis_storage(url)
    if url.startswith("grpc://"):
        return _grpc_storage(url)
    if "://" not in url and url.endswith(".log"):
        return _journal_file(url, must_exist)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise GsearchError(f"bad storage URL {safe_url(url)!r}; use for example "
                           f"{DEFAULT_STORAGE}, postgresql://user@host/dbname, "
                           "redis://host:6379/0 or a journal file studies.log") from None
    sqlite = parsed.get_backend_name() == "sqlite"
    engine_kwargs = {}
    if sqlite:
        if (parsed.database or "") in ("", ":memory:"):
            raise GsearchError("an in-memory SQLite storage keeps nothing; give a file, "
                               f"for example {DEFAULT_STORAGE}")
        _check_file(url, Path(parsed.database), must_exist)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    elif parsed.drivername == "mysql":  # SQLAlchemy's default driver is mysqlclient (C)
        parsed = parsed.set(drivername="mysql+pymysql")
    if parsed.get_driver_name() in ("psycopg2", "psycopg", "pymysql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beats = {}
            if heartbeat:
                beats = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                         "heartbeat_stale_trial_callback": _RetryStale(max_retry=RETRIES)}
            storage = optuna.storages.RDBStorage(parsed.render_as_string(hide_password=False),
                                                  engine_kwargs=engine_kwargs, **beats)
        if sqlite:
            _sqlite_wal(storage.engine)
        return storage
    except ImportError:
        raise GsearchError(f"no database driver for {safe_url(url)}; install it, for example "
                           "pip install 'psycopg[binary]' (postgresql://) or PyMySQL "
                           "(mysql://)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as e:
        raise GsearchError(f"cannot open storage {safe_url(url)}: "
                           f"{safe_url(_first_line(e))}") from None


def fingerprint(ds: Dataset, *, split_seed: int, test_size: float, val_size: float,
                cv: int = 1) -> dict:
    """What a study records about its data and evaluation; see GUARDED for what must match."""
    return {"data_sha256": ds.sha256, "data_path": ds.path, "n_rows": int(len(ds.y)),
            "classes": list(ds.classes), "split_seed": split_seed,
            "test_size": test_size, "val_size": val_size, "cv": cv}


def check_fingerprint(study: optuna.Study, expected: dict) -> None:
    recorded = {"cv": 1, **study.user_attrs}  # studies made before --cv used the split
    for key in GUARDED:
        if key in recorded and recorded[key] != expected[key]:
            raise GsearchError(
                f"study '{study.study_name}' was made with {key}={recorded[key]!r} "
                f"(data {recorded.get('data_path')}), this run has {key}={expected[key]!r}; "
                "use the same data and split options, or a new --study name")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(storage: optuna.storages.BaseStorage, name: str, **kwargs) -> optuna.Study:
    """Load an existing study or fail with the names that do exist."""
    if name not in study_names(storage):
        names = ", ".join(study_names(storage)) or "none"
        raise GsearchError(f"no study named '{name}' in this storage (studies: {names}); "
                           "pass --study")
    return optuna.load_study(study_name=name, storage=storage, **kwargs)


def make_sampler(name: str, seed: int | None,
                 fixed: dict | None = None) -> optuna.samplers.BaseSampler:
    """`fixed`: parameters held at one value (see parse_fixed), the others are sampled."""
    if name == "tpe":
        # constant_liar: trials asked while others run (populations, workers) avoid
        # the configurations still in flight.
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    elif name == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        raise GsearchError(f"unknown sampler {name!r}; use tpe or random")
    if not fixed:
        return sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(fixed, sampler)


def _parse_value(distribution: optuna.distributions.BaseDistribution, text: str):
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return next((c for c in distribution.choices if str(c).lower() == text.lower()), None)
    kind = int if isinstance(distribution, optuna.distributions.IntDistribution) else float
    try:
        value = kind(text)
    except ValueError:
        return None
    # _contains: Optuna's own range/step/choice check in the distribution's internal form
    return value if distribution._contains(distribution.to_internal_repr(value)) else None


def parse_fixed(items: Sequence[str]) -> dict:
    """`--fix NAME=VALUE` items as search-space parameters held at one value, each checked
    against the space (names, types, ranges) on a throwaway in-memory trial."""
    from gsearch.search.space import suggest_config

    if not items:
        return {}
    probe = optuna.create_study().ask()
    suggest_config(probe)
    fixed = {}
    for item in items:
        name, _, text = item.partition("=")
        distribution = probe.distributions.get(name)
        if distribution is None:
            raise GsearchError(f"--fix {item!r}: use NAME=VALUE with NAME one of "
                               f"{', '.join(probe.distributions)}")
        value = _parse_value(distribution, text)
        if value is None:
            raise GsearchError(f"--fix {item!r}: {text!r} is not a value of {name} in the "
                               f"search space ({distribution}); pick one inside it")
        fixed[name] = value
    return fixed


PRUNERS = ("median", "asha", "hyperband", "none")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """median: stop a trial below the median of earlier trials at the same epoch (after 10
    epochs); asha: successive halving, only the best third of the trials at epoch 5, 15, 45
    and 135 go on; hyperband: several successive-halving brackets; none: train every trial out."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=5, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=10, max_resource=200, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise GsearchError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def open_study(storage: optuna.storages.BaseStorage, name: str, *, data: dict,
               sampler: str, pruner: str, seed: int | None) -> optuna.Study:
    """Create the study, or resume it after checking it was made on the same data.

    A seeded sampler is re-seeded with seed + trials so far, so a resumed study
    continues the sequence instead of replaying its first configurations.
    """
    done = 0
    if name in study_names(storage):
        existing = optuna.load_study(study_name=name, storage=storage)
        check_fingerprint(existing, data)
        done = len(existing.trials)
    seed = None if seed is None else seed + done
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=make_sampler(sampler, seed), pruner=make_pruner(pruner),
                                load_if_exists=True)
    if done == 0:
        for key, value in data.items():
            study.set_user_attr(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])
    return study


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts


def serve_storage(url: str, *, host: str, port: int) -> None:
    """Optuna's gRPC storage proxy in front of a RDB storage until Ctrl-C: workers then
    need only grpc://host:port, not the database's address and password."""
    import socket

    from optuna.storages._grpc.server import make_server

    if not has_heartbeats(url):
        raise GsearchError(f"the gRPC proxy serves database storages (sqlite://, "
                           f"postgresql://, mysql://), not {safe_url(url)}")
    storage = optuna.storages.get_storage(open_storage(url))  # with Optuna's in-process cache
    try:  # gRPC shares a port with SO_REUSEPORT; a plain bind finds a server already there
        with socket.create_server((host, port)):
            pass
        server = make_server(storage, host, port)
        server.start()
    except (OSError, RuntimeError) as e:
        raise GsearchError(f"cannot serve on {host}:{port}: {_first_line(e)}; "
                           "choose another --port") from None
    # Ctrl-C and SIGTERM stop the proxy, also when it was started with SIGINT ignored
    # (a shell script's `&`, a CI runner): a proxy left running holds the port.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace=None).wait(5)  # cancel in-flight calls; their writes are committed
