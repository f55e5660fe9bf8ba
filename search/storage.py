"""Storages: a URL -> an Optuna storage, with one-line errors and passwords masked.

sqlite:///file.db (write-ahead log), postgresql://, mysql:// (PyMySQL), redis:// (journal),
a journal file NAME.log, grpc://HOST:PORT (a `gsearch serve-storage` proxy). Trials of RDB
storages beat a heartbeat; one whose process died is failed and run again (`retry_of`).
`serve_storage` runs Optuna's gRPC proxy in front of a database for many workers.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import signal
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from gsearch import GsearchError
from gsearch.search import records

# lazy: the CLI reads the constants and safe_url when it starts (gsearch --help), before
# Optuna and SQLAlchemy (about a second together); each driver (redis, grpc) is an extra
if TYPE_CHECKING:
    import optuna
    import sqlalchemy

DEFAULT_STORAGE = "sqlite:///studies.db"
STORAGE_ENV = "GSEARCH_STORAGE"  # --storage's default when set, as OPTUNA_STORAGE for Optuna's CLI


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class StorageError(GsearchError):
    """A storage URL that is malformed, names no usable storage, or cannot be reached; `url`
    is the URL as given (the CLI says where it came from, e.g. the environment variable)."""

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.url = url


def _about_url(function):
    """Errors of function(url, ...) as StorageError naming that url."""
    @functools.wraps(function)
    def wrapper(url: str, *args, **kwargs):
        try:
            return function(url, *args, **kwargs)
        except StorageError:
            raise
        except GsearchError as e:
            raise StorageError(str(e), url) from None
    return wrapper


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
CONNECT_TIMEOUT = 5  # seconds to reach a database server, Redis or a gRPC proxy
RETRIES = 3  # times a trial whose worker died is run again
_SERVER_HINT = ("check the host, port, user, password and database name, and that the "
                "server is running")


def _retry_stale(max_retry: int):
    """Optuna's retry of a trial whose worker stopped beating; the copy also records
    `retry_of` (the dead trial's number) as a user attribute, visible in the dashboard.
    A trial already retried is not retried again (two workers may both see it stale).
    Which worker ran the dead trial (system attributes gsearch:*) is not copied. The
    callback's `enqueued` lists the trials this process retried, for the trial loop to run."""
    import optuna

    class RetryStale(optuna.storages.RetryHeartbeatStaleTrialCallback):
        def __init__(self, max_retry: int | None = None):
            super().__init__(max_retry=max_retry)
            self.enqueued: list[int] = []

        def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if any(t.system_attrs.get(records.RETRY_HISTORY, [])[-1:] == [trial.number]  # Optuna's record
                   for t in study.get_trials(deepcopy=False)):
                return
            if len(trial.system_attrs.get(records.RETRY_HISTORY, [])) >= RETRIES:
                return
            trial.user_attrs = {**trial.user_attrs, records.RETRY_OF: trial.number}
            trial.system_attrs = {k: v for k, v in trial.system_attrs.items()
                                  if not k.startswith(records.OWN_PREFIX)}
            super().__call__(study, trial)
            self.enqueued.append(trial.number)

    return RetryStale(max_retry=max_retry)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Enqueue a failed trial once more (same parameters and user attributes, `retry_of`),
    as the heartbeat does for a trial whose worker died; at most RETRIES times. Whether it
    was enqueued (not when already retried, or retried RETRIES times)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = _retry_stale(RETRIES)
        retry(study, trial)
    return bool(retry.enqueued)


def _sqlite_wal(engine: sqlalchemy.Engine) -> None:
    """Write-ahead log: readers never block the writer and a commit costs no fsync, so
    several workers share one file without "database is locked" and a trial's per-epoch
    reports stay cheap. The journal mode is stored in the file; synchronous is per connection."""
    import sqlalchemy

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
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = Path(url)
    _check_file(url, path, must_exist)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            head = f.readline(65536)
        if not head.startswith(b'{"op_code"'):   # every record of Optuna's journal does
            raise GsearchError(f"{url} is not an Optuna journal file; pass another --storage "
                               "(a journal file is a new or existing NAME.log written by gsearch)")
    elif not path.exists() and not os.access(path.parent, os.W_OK):
        raise GsearchError(f"cannot create {url}: folder {path.parent} is read-only; choose "
                           "another path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.JournalStorage(JournalFileBackend(url))
    except OSError as e:
        raise GsearchError(f"cannot open journal file {url}: {_first_line(e)}; pass another "
                           "--storage") from None
    except Exception as e:   # the journal is replayed here: a record Optuna cannot apply
        raise GsearchError(f"{url} is not a valid Optuna journal file (a record Optuna cannot "
                           f"replay: {type(e).__name__} {_first_line(e)}); pass another --storage "
                           "or restore the file from a backup") from None


def _grpc_storage(url: str) -> optuna.storages.BaseStorage:
    """A client of `gsearch serve-storage` (Optuna's gRPC storage proxy)."""
    import optuna

    hostport = url.removeprefix("grpc://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise GsearchError(f"bad storage URL {url!r}; use grpc://HOST:PORT of a "
                           "'gsearch serve-storage'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        proxy.wait_server_ready(timeout=3)  # it retries a refused port until then
    except ImportError:
        raise GsearchError("grpc:// needs grpcio; pip install grpcio protobuf") from None
    except ConnectionError:
        raise GsearchError(f"cannot reach the storage proxy at {url}; start it with "
                           "'gsearch serve-storage' or check the address") from None
    return proxy


def _redis_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on Redis (no heartbeats in Optuna's journal storages)."""
    import optuna
    import redis
    from optuna.storages.journal import JournalRedisBackend

    try:
        redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                              socket_timeout=CONNECT_TIMEOUT).ping()
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


def _bad_url(url: str) -> str:
    return (f"bad storage URL {safe_url(url)!r}; use for example {DEFAULT_STORAGE}, "
            "postgresql://user@host/dbname, mysql://user@host/dbname, redis://host:6379/0, "
            "grpc://host:13000 or a journal file studies.log")


_URL = re.compile(r"^(?P<scheme>[\w+]+)://(?P<rest>.*)$", re.DOTALL)   # SQLAlchemy's shape


def _known_dialect(scheme: str) -> bool:
    """Whether SQLAlchemy has the dialect (and driver) `scheme` names, read from its package
    folder and the dialects other packages register, without importing SQLAlchemy. A name
    this cannot judge is taken as known: open_storage decides."""
    spec = importlib.util.find_spec("sqlalchemy")
    if spec is None or not spec.submodule_search_locations:
        return True
    dialects = Path(list(spec.submodule_search_locations)[0]) / "dialects"
    dialect, _, driver = scheme.partition("+")
    folder = dialects / ("mysql" if dialect == "mariadb" else dialect)
    if (folder / "__init__.py").is_file():
        return not driver or (folder / f"{driver}.py").is_file() or dialect == "mariadb"
    from importlib.metadata import entry_points

    names = {e.name for e in entry_points(group="sqlalchemy.dialects")}
    return dialect in names or scheme.replace("+", ".") in names or not dialects.is_dir()


@_about_url
def check_url(url: str, *, must_exist: bool = False) -> None:
    """The checks of open_storage that need neither Optuna, SQLAlchemy nor a server: the
    URL's shape and scheme, and for a SQLite or journal file its folder (and with
    `must_exist` the file). Same one-line errors as open_storage, in milliseconds, so the
    CLI runs it before it imports torch and Optuna."""
    if _is_redis(url):
        return
    if url.startswith("grpc://"):
        host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise GsearchError(f"bad storage URL {url!r}; use grpc://HOST:PORT of a "
                               "'gsearch serve-storage'")
        return
    if "://" not in url and url.endswith(".log"):
        _check_file(url, Path(url), must_exist)
        return
    match = _URL.match(url)
    if not match or not _known_dialect(match["scheme"]):
        raise GsearchError(_bad_url(url))
    if match["scheme"].partition("+")[0] != "sqlite":
        return
    rest = match["rest"].split("?", 1)[0]
    host, _, database = rest.partition("/")
    if host or "%" in database:   # SQLAlchemy's parsing decides these
        return
    if database in ("", ":memory:"):
        raise GsearchError("an in-memory SQLite storage keeps nothing; give a file, "
                           f"for example {DEFAULT_STORAGE}")
    path = Path(database)
    _check_file(url, path, must_exist)
    if not path.exists() and not os.access(path.parent, os.W_OK):
        raise GsearchError(f"cannot create {safe_url(url)}: folder {path.parent} is "
                           "read-only; choose another path")


@_about_url
def open_storage(url: str, *, must_exist: bool = False,
                 heartbeat: int | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: sqlite:// (WAL), postgresql://, mysql:// (RDBStorage;
    mysql:// means PyMySQL), redis:// or a file path ending in .log (JournalStorage),
    grpc://host:port (a `gsearch serve-storage` proxy).

    With `heartbeat` (seconds), running trials of a RDB storage beat that often; one whose
    process died is marked failed after 3 missed beats by the next trial any worker starts,
    and run again (up to RETRIES times, with user attribute `retry_of`).

    The storage is reached at once (a server within CONNECT_TIMEOUT seconds), so every bad
    URL, unreachable server, wrong database or password, unwritable or foreign file fails
    here as one GsearchError naming the URL, its password masked.
    """
    check_url(url, must_exist=must_exist)
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import make_url

    if _is_redis(url):
        return _redis_storage(url)
    if url.startswith("grpc://"):
        return _grpc_storage(url)
    if "://" not in url and url.endswith(".log"):
        return _journal_file(url, must_exist)
    try:
        parsed = make_url(url)
        if parsed.drivername == "mysql":  # SQLAlchemy's default driver is mysqlclient (C)
            parsed = parsed.set(drivername="mysql+pymysql")
        parsed.get_dialect()   # an unknown scheme or driver fails here, not in a traceback
    except sqlalchemy.exc.ArgumentError:
        raise GsearchError(_bad_url(url)) from None
    sqlite = parsed.get_backend_name() == "sqlite"
    engine_kwargs = {}
    if sqlite:
        if (parsed.database or "") in ("", ":memory:"):
            raise GsearchError("an in-memory SQLite storage keeps nothing; give a file, "
                               f"for example {DEFAULT_STORAGE}")
        path = Path(parsed.database)
        _check_file(url, path, must_exist)
        if not path.exists() and not os.access(path.parent, os.W_OK):
            raise GsearchError(f"cannot create {safe_url(url)}: folder {path.parent} is "
                               "read-only; choose another path")
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    elif parsed.get_driver_name() in ("psycopg2", "psycopg", "pymysql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    hint = ("check that the file and its folder are writable" if sqlite else _SERVER_HINT)
    try:  # RDBStorage connects at once: it creates or checks the tables
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beats = {}
            if heartbeat:
                beats = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                         "heartbeat_stale_trial_callback": _retry_stale(RETRIES)}
            storage = optuna.storages.RDBStorage(parsed.render_as_string(hide_password=False),
                                                  engine_kwargs=engine_kwargs, **beats)
        if sqlite:
            _sqlite_wal(storage.engine)
        return storage
    except ImportError:
        raise GsearchError(f"no database driver for {safe_url(url)}; install it, for example "
                           "pip install 'psycopg[binary]' (postgresql://) or PyMySQL "
                           "(mysql://)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError, OSError) as e:
        raise GsearchError(f"cannot open storage {safe_url(url)}: "
                           f"{safe_url(_first_line(e))}; {hint}") from None


def serve_storage(url: str, *, host: str, port: int, ready=None) -> None:
    """Optuna's gRPC storage proxy in front of a RDB storage until Ctrl-C: workers then
    need only grpc://host:port, not the database's address and password. `ready()` is
    called once the proxy serves."""
    import socket

    import optuna

    from gsearch.search._compat import make_grpc_server

    if not has_heartbeats(url):
        raise GsearchError(f"the gRPC proxy serves database storages (sqlite://, "
                           f"postgresql://, mysql://), not {safe_url(url)}")
    storage = optuna.storages.get_storage(open_storage(url))  # with Optuna's in-process cache
    try:  # gRPC shares a port with SO_REUSEPORT; a plain bind finds a server already there
        with socket.create_server((host, port)):
            pass
        server = make_grpc_server(storage, host, port)
        server.start()
    except (OSError, RuntimeError) as e:
        raise GsearchError(f"cannot serve on {host}:{port}: {_first_line(e)}; "
                           "choose another --port") from None
    if ready is not None:
        ready()
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
