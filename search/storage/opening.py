"""A URL -> an Optuna storage, reached at once, with one-line errors and passwords masked
(`open_storage`); Optuna's gRPC proxy in front of a database for many workers
(`serve_storage`)."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import time
import warnings

import optuna
import sqlalchemy
from optuna.storages.journal import JournalRedisBackend
from sqlalchemy.engine import make_url

from gsearch import GsearchError
from gsearch._ports import check_port
from gsearch.search._compat import make_grpc_server
from gsearch.search.storage.files import (SQLITE_BUSY_TIMEOUT, check_journal_file,
                                          check_sqlite_file, creation_lock)
from gsearch.search.storage.journal import JournalFile
from gsearch.search.storage.rdb import ServerStorage, Storage
from gsearch.search.storage.resilience import (RETRIES, STORAGE_RETRY, Outage, RetryStale,
                                               disk_full, full_disk_error)
from gsearch.search.storage.url import (Kind, StorageURL, about_url, bad_url, check_url,
                                        first_line, safe_url)

CONNECT_TIMEOUT = 5  # seconds to reach a database server, Redis or a gRPC proxy
SCHEMA_LOCK_TIMEOUT = 60  # seconds a process waits for another one creating Optuna's tables
_SERVER_HINT = ("check the host, port, user, password and database name, and that the "
                "server is running")


@about_url
def open_storage(url: str, *, must_exist: bool = False, heartbeat: int | None = None,
                 retry: float = STORAGE_RETRY) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: sqlite:// (WAL), postgresql://, mysql:// (RDBStorage;
    mysql:// means PyMySQL), redis:// or a file path ending in .log (JournalStorage),
    grpc://host:port (a `gsearch serve-storage` proxy).

    With `heartbeat` (seconds), running trials of a RDB storage beat that often; one whose
    process died is marked failed after 3 missed beats by the next trial any worker starts,
    and run again (up to RETRIES times, with user attribute `retry_of`).

    On a database server (PostgreSQL, MySQL) a connection lost later is retried with back-off
    for `retry` seconds (then one GsearchError, resilience.StorageLost), and trials that never
    got a heartbeat row are failed and run again too once seen unchanged for 3 beats.

    The storage is reached at once (a server within CONNECT_TIMEOUT seconds), so every bad
    URL, unreachable server, wrong database or password, unwritable or foreign file fails
    here as one GsearchError naming the URL, its password masked.
    """
    location = check_url(url, must_exist=must_exist)
    if location.kind is Kind.REDIS:
        return _redis_storage(location)
    if location.kind is Kind.GRPC:
        return _grpc_storage(location)
    if location.kind is Kind.JOURNAL:
        return _journal_file(location)
    return _rdb_storage(location, heartbeat=heartbeat, retry=retry)


def _rdb_storage(location: StorageURL, *, heartbeat: int | None, retry: float) -> Storage:
    """A SQLite file (checked first) or a database server, as rdb.Storage or rdb.ServerStorage."""
    url = location.url
    try:
        parsed = make_url(url)
        if parsed.drivername == "mysql":  # SQLAlchemy's default driver is mysqlclient (C)
            parsed = parsed.set(drivername="mysql+pymysql")
        parsed.get_dialect()   # an unknown scheme or driver fails here, not in a traceback
    except sqlalchemy.exc.ArgumentError:
        raise GsearchError(bad_url(url)) from None
    sqlite = location.kind is Kind.SQLITE
    engine_kwargs = {}
    if sqlite:
        if location.path.exists():
            check_sqlite_file(location)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    elif parsed.get_driver_name() in ("psycopg2", "psycopg", "pymysql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    if not sqlite:   # a connection the server dropped is replaced, not used (then retried)
        engine_kwargs["pool_pre_ping"] = True
    beats = {}
    if heartbeat:
        beats = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                 "heartbeat_stale_trial_callback": RetryStale(RETRIES)}
    hint = ("check that the file and its folder are writable" if sqlite else _SERVER_HINT)
    try:  # RDBStorage connects at once: it creates or checks the tables
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rendered = parsed.render_as_string(hide_password=False)
            if not sqlite:
                with _schema_lock(parsed, engine_kwargs):
                    return ServerStorage(rendered, engine_kwargs=engine_kwargs,
                                         location=location, outage=Outage(url, retry), **beats)
            with creation_lock(location.path):
                storage = Storage(rendered, engine_kwargs=engine_kwargs, location=location,
                                  **beats)
        _sqlite_wal(storage.engine)
        return storage
    except ImportError:
        raise GsearchError(f"no database driver for {location.safe}; install it, for example "
                           "pip install 'psycopg[binary]' (postgresql://) or PyMySQL "
                           "(mysql://)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError, OSError) as e:
        if disk_full(e) is not None:   # creating the tables, or a SQLite file's first write
            raise full_disk_error(e, str(location.path) if sqlite else location.safe,
                                  server=not sqlite) from None
        raise GsearchError(f"cannot open storage {location.safe}: "
                           f"{safe_url(first_line(e))}; {hint}") from None


# how each server takes and gives back the lock on creating Optuna's tables, given its key
_SCHEMA_LOCKS = {
    "postgresql": ("SELECT pg_try_advisory_lock(%(key)s)", "SELECT pg_advisory_unlock(%(key)s)"),
    "mysql": ("SELECT GET_LOCK(%(key)s, 1)", "SELECT RELEASE_LOCK(%(key)s)"),   # waits 1 s
}


def _schema_lock_name(url: sqlalchemy.URL) -> tuple[str, object] | None:
    """Which of _SCHEMA_LOCKS guards creating Optuna's tables in `url`'s database, and its
    key there; None for a database without such a lock (a SQLite file has
    files.creation_lock)."""
    dialect = url.get_dialect().name
    if dialect == "postgresql":   # advisory locks are the database's own: a constant key
        key = int.from_bytes(hashlib.sha256(b"gsearch: optuna schema").digest()[:8], "big",
                             signed=True)
        return "postgresql", key
    if dialect in ("mysql", "mariadb"):   # GET_LOCK's names are the server's: add the database
        digest = hashlib.sha256((url.database or "").encode()).hexdigest()[:40]
        return "mysql", f"gsearch-schema-{digest}"   # within MySQL's 64 characters
    return None


@contextlib.contextmanager
def _schema_lock(url: sqlalchemy.URL, engine_kwargs: dict):
    """Serializes creating (or checking) Optuna's tables in one server database between
    processes, as files.creation_lock does for SQLite: three runs creating a fresh database's
    tables at once race otherwise (MariaDB: "Table 'studies' already exists", "Duplicate entry
    'v3.2.0.a'"; PostgreSQL: a UniqueViolation on pg_type). A lock of the server's own
    (PostgreSQL's advisory lock, MySQL's GET_LOCK), taken on a connection of its own for as
    long as RDBStorage creates or checks the tables; the server releases it when that
    connection ends, also when its process dies."""
    lock = _schema_lock_name(url)
    if lock is None:
        yield
        return
    dialect, key = lock
    take, release = _SCHEMA_LOCKS[dialect]
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args=engine_kwargs.get("connect_args", {}))
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + SCHEMA_LOCK_TIMEOUT
            while not connection.exec_driver_sql(take, {"key": key}).scalar():
                if time.monotonic() > deadline:
                    raise GsearchError(
                        f"another process has been creating Optuna's tables in database "
                        f"'{url.database}' for over {SCHEMA_LOCK_TIMEOUT} s; try again when "
                        "it is done (or end it)")
                time.sleep(0.05 if dialect == "postgresql" else 0)
            connection.commit()   # the lock is the session's: it outlives the transaction
            try:
                yield
            finally:
                with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                    connection.exec_driver_sql(release, {"key": key})
                    connection.commit()
    finally:
        engine.dispose()


def _sqlite_wal(engine: sqlalchemy.Engine) -> None:
    """Write-ahead log: readers never block the writer and a commit costs no fsync, so
    several workers share one file without "database is locked" and a trial's per-epoch
    reports stay cheap. The journal mode is stored in the file; synchronous is per connection."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    engine.dispose()  # reconnect the pool through the listener


def _journal_file(location: StorageURL) -> optuna.storages.BaseStorage:
    """Optuna's journal storage in a local file (no heartbeats in Optuna's journal storages)."""
    url = location.url
    check_journal_file(location)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.JournalStorage(JournalFile(location))
    except OSError as e:
        if disk_full(e) is not None:
            raise full_disk_error(e, url) from None
        raise GsearchError(f"cannot open journal file {url}: {first_line(e)}; pass another "
                           "--storage") from None
    except Exception as e:   # the journal is replayed here: a record Optuna cannot apply
        raise GsearchError(f"{url} is not a valid Optuna journal file (a record Optuna cannot "
                           f"replay: {type(e).__name__} {first_line(e)}); pass another --storage "
                           "or restore the file from a backup") from None


def _grpc_storage(location: StorageURL) -> optuna.storages.BaseStorage:
    """A client of `gsearch serve-storage` (Optuna's gRPC storage proxy)."""
    host, port = location.address
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
        proxy.wait_server_ready(timeout=3)  # it retries a refused port until then
    except ImportError:
        raise GsearchError("grpc:// needs grpcio; pip install grpcio protobuf") from None
    except ConnectionError:
        raise GsearchError(f"cannot reach the storage proxy at {location.url}; start it with "
                           "'gsearch serve-storage' or check the address") from None
    return proxy


def _redis_storage(location: StorageURL) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on Redis (no heartbeats in Optuna's journal storages)."""
    import redis   # lazy: the [redis] extra

    url = location.url
    try:
        redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                              socket_timeout=CONNECT_TIMEOUT).ping()
    except (redis.RedisError, ValueError) as e:
        raise GsearchError(f"cannot reach Redis storage {location.safe}: "
                           f"{safe_url(first_line(e))}; check the URL and that the server "
                           "is running") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalRedisBackend(url))


def serve_storage(url: str, *, host: str, port: int, ready=None) -> None:
    """Optuna's gRPC storage proxy in front of a RDB storage until Ctrl-C: workers then
    need only grpc://host:port, not the database's address and password. `ready()` is
    called once the proxy serves."""
    if not check_url(url).has_heartbeats:
        raise GsearchError(f"the gRPC proxy serves database storages (sqlite://, "
                           f"postgresql://, mysql://), not {safe_url(url)}")
    storage = optuna.storages.get_storage(open_storage(url))  # with Optuna's in-process cache
    # gRPC shares a port with SO_REUSEPORT; a plain bind finds a server already there
    check_port(host, port)
    try:
        server = make_grpc_server(storage, host, port)
        server.start()
    except (OSError, RuntimeError) as e:
        raise GsearchError(f"cannot serve on {host}:{port}: {first_line(e)}; "
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
