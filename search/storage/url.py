"""Storages: a URL -> an Optuna storage, with one-line errors and passwords masked.

sqlite:///file.db (write-ahead log), postgresql://, mysql:// (PyMySQL), redis:// (journal),
a journal file NAME.log, grpc://HOST:PORT (a `gsearch serve-storage` proxy). Trials of RDB
storages beat a heartbeat; one whose process died is failed and run again (`retry_of`).
`serve_storage` runs Optuna's gRPC proxy in front of a database for many workers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import re
import signal
import sys
import time
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
STORAGE_RETRY = 60.0  # seconds a database server may be unreachable mid-run (--storage-retry)
LOST = "lost the connection to storage"   # how a give-up's message starts (parallel.py reads it)
MAX_STUDY_NAME = 512  # characters: Optuna's study_name column (VARCHAR(512) in its RDB models)
# PRAGMA quick_check reads every page of a SQLite file when it is opened: about 0.1 s for 50 MB
# (bench/bench_outage.py prints it); a larger file gets the header check only, so opening stays
# bounded.
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024
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


def check_study_name(name: str) -> None:
    """A study name every storage can keep, checked before the storage is touched (PostgreSQL
    and MySQL refuse a longer one with a traceback; SQLite would keep what the others refuse)."""
    if len(name) > MAX_STUDY_NAME:
        raise GsearchError(f"--study name is {len(name)} characters long; a storage keeps at most "
                           f"{MAX_STUDY_NAME}: choose a shorter name")


@contextlib.contextmanager
def _creation_lock(path: Path):
    """Serializes opening (and so creating) SQLite files in one folder between processes:
    three runs creating a fresh file at once would otherwise race on Optuna's tables ("UNIQUE
    constraint failed: alembic_version.version_num"). An flock on the folder itself, so no
    lock file is left behind; the kernel releases it when its holder dies. POSIX only."""
    try:
        import fcntl
        fd = os.open(path.parent, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _check_sqlite_file(url: str, path: Path) -> None:
    """An existing SQLite file that gsearch can write and that is intact, checked before
    anything is written: a read-only or immutable file (SQLite would fail mid-run, or crash
    on its memory-mapped index), one that is not SQLite, or one with corrupt pages (PRAGMA
    quick_check, for files up to QUICK_CHECK_MAX_BYTES)."""
    import sqlite3

    where = safe_url(url)
    if not path.is_file():
        raise GsearchError(f"{where}: {path} is not a file; choose another path")
    if not os.access(path, os.W_OK):
        raise GsearchError(f"SQLite file {path} is read-only or immutable, and a run writes "
                           "to it: make it writable (chmod u+w, chattr -i) or copy it elsewhere")
    if not os.access(path.parent, os.W_OK):
        raise GsearchError(f"folder {path.parent} of SQLite file {path} is read-only, and SQLite "
                           "writes its -wal and -shm files beside the file: make it writable or "
                           "copy the file elsewhere")
    size = path.stat().st_size
    if not size:
        return   # a file just created (by `touch`, or another run creating it now)
    # Read through SQLite only: closing a descriptor of our own (a plain open() to read the
    # header) would drop the POSIX locks this process's other connections hold on the file,
    # and other processes could then reset its write-ahead log under them (corruption).
    check = "PRAGMA quick_check(1)" if size <= QUICK_CHECK_MAX_BYTES else "PRAGMA schema_version"
    try:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)
        try:
            rows = connection.execute(check).fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        if "locked" in str(e):
            raise GsearchError(f"SQLite file {path} stayed locked by another process for "
                               f"{SQLITE_BUSY_TIMEOUT} s; try again when it is done") from None
        if "not a database" in str(e):
            raise GsearchError(f"{path} is not a SQLite database; pass another --storage") from None
        rows = [(_first_line(e),)]
    if check == "PRAGMA schema_version":
        return
    if rows != [("ok",)]:
        what = " ".join(str(rows[0][0]).replace("*** in database main ***", "").split())
        raise GsearchError(f"SQLite file {path} is corrupt ({what}); nothing was written "
                           "to it: restore it from a backup, or recover what is readable with "
                           "sqlite3's .recover into a new file")


def _transient(error: BaseException) -> BaseException | None:
    """The lost or refused connection to a database server behind an error (Optuna wraps
    SQLAlchemy's errors in StorageInternalError), which retrying can cure; None for a
    refused statement."""
    import sqlalchemy

    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return error
        if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                              ConnectionError, TimeoutError)):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


class _Outage:
    """Retries of one storage's calls while its database server is unreachable: with back-off
    (0.25 s doubling to 5 s) for `seconds` from the first failure, then a one-line
    GsearchError; after giving up each call tries once until one succeeds again. A call
    retried after its connection dropped may run twice (a trial created twice leaves a spare
    RUNNING trial that a later run's heartbeat fails); every other write is idempotent."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = safe_url(url), seconds
        self.down_since: float | None = None
        self.back_at = -math.inf   # when the last outage ended (time.monotonic())
        self.gave_up = False

    def call(self, function, *args, **kwargs):
        delay = 0.25
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                e = _transient(error)
                if e is None:
                    raise
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    if self.seconds:   # once per outage and process (each worker too)
                        print(f"gsearch: {LOST} {self.url} ({safe_url(_first_line(e))}); "
                              f"retrying for up to {self.seconds:g} s (--storage-retry)",
                              file=sys.stderr, flush=True)
                left = self.seconds - (now - self.down_since)
                if self.gave_up or left <= 0:
                    self.gave_up = True
                    raise GsearchError(
                        f"{LOST} {self.url} for more than {self.seconds:g} s "
                        f"({safe_url(_first_line(e))}); the run stopped: run it again when the "
                        "database is back (it fails and re-runs trials left RUNNING), or allow "
                        "a longer outage with --storage-retry") from None
                time.sleep(min(delay, left))
                delay = min(2 * delay, 5.0)
                continue
            if self.down_since is not None:
                self.back_at = time.monotonic()
            self.down_since, self.gave_up = None, False
            return result


def give_up(storage) -> None:
    """Calls to `storage` (from open_storage) stop retrying: another process of the run has
    given up on the same server. Each call then tries once."""
    outage = getattr(getattr(storage, "_backend", storage), "outage", None)
    if outage is not None:
        outage.gave_up = True
        if outage.down_since is None:
            outage.down_since = time.monotonic() - outage.seconds


def with_retry(storage, function, *args, **kwargs):
    """function(*args) (a write that goes around the storage's methods, such as
    _compat.write_intermediate_values), retried as the storage's own calls are."""
    outage = getattr(getattr(storage, "_backend", storage), "outage", None)
    return outage.call(function, *args, **kwargs) if outage else function(*args, **kwargs)


_NOT_RETRIED = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "remove_session",
                "upgrade", "get_current_version", "get_head_version", "get_all_versions",
                "check_trial_is_updatable"}

# what Optuna's _CachedStorage (in front of every RDB storage of a study) calls on it directly
_CACHE_CALLS = {"_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials"}


@functools.cache
def _storage_class(server: bool):
    """RDBStorage whose stale trials are also those that never got a heartbeat row
    (_stale_with_unbeaten); on a database server each storage call is also retried through
    a lost connection (_Outage)."""
    import optuna

    base = optuna.storages.RDBStorage
    if not server:
        cls = type("SQLiteStorage", (base,), {
            "_get_stale_trial_ids": _stale_with_unbeaten(base._get_stale_trial_ids),
            "__module__": __name__})
        globals()[cls.__name__] = cls   # picklable by name, as an RDBStorage is
        return cls

    def retried(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            return self.outage.call(method, self, *args, **kwargs)
        return call

    namespace = {name: retried(getattr(base, name)) for name in dir(base)
                 if (not name.startswith("_") or name in _CACHE_CALLS)
                 and name not in _NOT_RETRIED and callable(getattr(base, name))}
    namespace["_get_stale_trial_ids"] = retried(_stale_with_unbeaten(base._get_stale_trial_ids))
    namespace["__module__"] = __name__
    cls = type("ServerStorage", (base,), namespace)
    globals()[cls.__name__] = cls
    return cls


def _stale_with_unbeaten(get_stale):
    """Optuna's stale trials (a heartbeat row older than the grace period), and RUNNING trials
    with no heartbeat row at all (a process that died between creating a trial and its first
    beat, or gave up during an outage there) that this process has seen unchanged (no new
    curve value or attribute, not beaten) for the grace period. Judged by this process's
    clock only; a live trial of a run with heartbeats off writes its curve every epoch and
    so is not taken for stale unless an epoch lasts longer than the grace period."""
    def stale(self, study_id: int) -> list[int]:
        import optuna
        import sqlalchemy.orm
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        grace = self.grace_period or 2 * self.heartbeat_interval
        seen = self.__dict__.setdefault("_unbeaten", {})
        now = time.monotonic()
        outage = getattr(self, "outage", None)
        ids = list(get_stale(self, study_id))   # fails while the server is down (retried)
        # Just back from an outage, or this very call retried through one (back_at is set
        # once it returns): every heartbeat is as old as the outage, the others' and this
        # process's own, so the others beat again first, and trials without a heartbeat row
        # are watched afresh.
        if outage is not None and (outage.down_since is not None
                                   or time.monotonic() - outage.back_at < grace):
            seen.clear()
            return []
        with _create_scoped_session(self.scoped_session) as session:
            running = (session.query(models.TrialModel)
                       .options(sqlalchemy.orm.selectinload(models.TrialModel.heartbeats),
                                sqlalchemy.orm.selectinload(models.TrialModel.intermediate_values),
                                sqlalchemy.orm.selectinload(models.TrialModel.user_attributes),
                                sqlalchemy.orm.selectinload(models.TrialModel.system_attributes))
                       .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                       .filter(models.TrialModel.study_id == study_id).all())
            current = {}
            for trial in running:
                if trial.heartbeats:
                    continue
                mark = (len(trial.intermediate_values), len(trial.user_attributes),
                        sum(len(a.value_json or "") for a in trial.system_attributes))
                first, old = seen.get(trial.trial_id, (now, mark))
                if old != mark:
                    first = now
                current[trial.trial_id] = (first, mark)
                if now - first >= grace:
                    ids.append(trial.trial_id)
        seen.clear()
        seen.update(current)
        return ids

    return stale


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


def _grpc_address(url: str) -> tuple[str, int]:
    """HOST and PORT of grpc://HOST:PORT, or the one-line error."""
    host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise GsearchError(f"bad storage URL {url!r}; use grpc://HOST:PORT of a "
                           "'gsearch serve-storage'")
    return host, int(port)


def _grpc_storage(url: str) -> optuna.storages.BaseStorage:
    """A client of `gsearch serve-storage` (Optuna's gRPC storage proxy)."""
    import optuna

    host, port = _grpc_address(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
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
        _grpc_address(url)
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
def open_storage(url: str, *, must_exist: bool = False, heartbeat: int | None = None,
                 retry: float = STORAGE_RETRY) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: sqlite:// (WAL), postgresql://, mysql:// (RDBStorage;
    mysql:// means PyMySQL), redis:// or a file path ending in .log (JournalStorage),
    grpc://host:port (a `gsearch serve-storage` proxy).

    With `heartbeat` (seconds), running trials of a RDB storage beat that often; one whose
    process died is marked failed after 3 missed beats by the next trial any worker starts,
    and run again (up to RETRIES times, with user attribute `retry_of`).

    On a database server (PostgreSQL, MySQL) a connection lost later is retried with back-off
    for `retry` seconds (then one GsearchError), and trials that never got a heartbeat row
    are failed and run again too once seen unchanged for 3 beats.

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
        if path.exists():
            _check_sqlite_file(url, path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    elif parsed.get_driver_name() in ("psycopg2", "psycopg", "pymysql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    if not sqlite:   # a connection the server dropped is replaced, not used (then retried)
        engine_kwargs["pool_pre_ping"] = True
    hint = ("check that the file and its folder are writable" if sqlite else _SERVER_HINT)
    try:  # RDBStorage connects at once: it creates or checks the tables
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beats = {}
            if heartbeat:
                beats = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                         "heartbeat_stale_trial_callback": _retry_stale(RETRIES)}
            kind = _storage_class(server=not sqlite)
            with (_creation_lock(Path(parsed.database)) if sqlite else contextlib.nullcontext()):
                storage = kind(parsed.render_as_string(hide_password=False),
                               engine_kwargs=engine_kwargs, **beats)
            if not sqlite:
                storage.outage = _Outage(url, retry)
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
    import optuna

    from gsearch.search._compat import make_grpc_server
    from gsearch._ports import check_port

    if not has_heartbeats(url):
        raise GsearchError(f"the gRPC proxy serves database storages (sqlite://, "
                           f"postgresql://, mysql://), not {safe_url(url)}")
    storage = optuna.storages.get_storage(open_storage(url))  # with Optuna's in-process cache
    check_port(host, port)   # gRPC shares a port with SO_REUSEPORT; a plain bind finds a server already there
    try:
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
