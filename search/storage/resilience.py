"""What keeps a run going when a process or the database fails: the retry of a storage's
calls through an outage of its database server (`Outage`; the give-up is `StorageLost`),
the retry of a trial whose worker died (`RetryStale`, `retry_trial`), and the trials that
died before their first heartbeat (`Unbeaten`); and what stops it in one line instead: a
full disk (`DiskFull`). storage.rdb binds them to Optuna's storage.
"""

from __future__ import annotations

import errno
import math
import sys
import time
import warnings

import optuna
import sqlalchemy

from gsearch import GsearchError
from gsearch.search import records
from gsearch.search._compat import cached_backend
from gsearch.search.storage.url import causes, first_line, safe_url

RETRIES = 3  # times a trial whose worker died is run again
STORAGE_RETRY = 60.0  # seconds a database server may be unreachable mid-run (--storage-retry)
_LOST = "lost the connection to storage"


class StorageStop(GsearchError):
    """A failure of the storage that stops a run whatever it runs (the storage cannot be
    written): a worker sends it to its parent as it is (it pickles), and the run's message
    gets the --trials of the rerun that finishes its count (parallel.run_search)."""


class StorageLost(StorageStop):
    """The give-up on a database server that stayed unreachable for longer than
    --storage-retry: the run stops. The parent of a run's workers tells its other processes
    to give up too (give_up)."""


class DiskFull(StorageStop):
    """The disk that holds the storage (a SQLite or journal file, a database server's data)
    is full: no write can succeed until space is freed, so it is not retried."""


# what a full disk looks like behind each driver: an errno, SQLite's result code, PostgreSQL's
# SQLSTATE, MySQL's error numbers (ER_DISK_FULL, ER_RECORD_FILE_FULL: "The table ... is full")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"
_MYSQL_FULL = {1021, 1114}
_FULL_WORDS = ("no space left on device", "database or disk is full", "disk full",
               "errcode: 28", "errno: 28")


def disk_full(error: BaseException) -> BaseException | None:
    """The full disk behind an error, as the operating system or the database's driver said
    it; None for any other error."""
    for e in causes(error):
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return e
        code = getattr(e, "sqlite_errorcode", None)   # sqlite3 errors, Python 3.11+
        if code is not None and code & 0xFF == _SQLITE_FULL:
            return e
        if _PG_DISK_FULL in (getattr(e, "sqlstate", None), getattr(e, "pgcode", None)):
            return e
        if type(e).__module__.startswith("pymysql") and e.args and e.args[0] in _MYSQL_FULL:
            return e
        if (type(e).__module__.partition(".")[0] in ("sqlite3", "psycopg", "psycopg2", "pymysql")
                and any(w in str(e).lower() for w in _FULL_WORDS)):
            return e
    return None


def full_disk_error(error: BaseException, where: str, *, server: bool = False) -> DiskFull:
    """The one-line DiskFull for `error` (disk_full(error) is not None) of the storage at
    `where` (a file's path, or a server's URL with its password masked)."""
    reason = safe_url(first_line(disk_full(error) or error))
    if server:
        return DiskFull(f"the database server of {where} is out of disk space ({reason}); "
                        "free space on it and run again")
    return DiskFull(f"the disk holding {where} is full ({reason}); free space there and "
                    "run again")


# A call whose transaction the server aborted for another one's sake (a deadlock, a
# serialization failure: PostgreSQL's SQLSTATEs, MySQL's ER_LOCK_DEADLOCK and
# ER_LOCK_WAIT_TIMEOUT) is run again this many times before it counts as an outage.
CONFLICT_RETRIES = 3
_PG_CONFLICTS = {"40P01", "40001"}
_MYSQL_CONFLICTS = {1213, 1205}


def conflict(error: BaseException) -> BaseException | None:
    """The deadlock or serialization failure behind an error; None for any other error."""
    for e in causes(error):
        if _PG_CONFLICTS & {getattr(e, "sqlstate", None), getattr(e, "pgcode", None)}:
            return e
        if type(e).__module__.startswith("pymysql") and e.args and e.args[0] in _MYSQL_CONFLICTS:
            return e
    return None


def transient(error: BaseException) -> BaseException | None:
    """The lost or refused connection to a database server behind an error (Optuna wraps
    SQLAlchemy's errors in StorageInternalError), which retrying can cure; None for a
    refused statement, and for a full disk (an OperationalError too, which waiting does
    not cure)."""
    if disk_full(error) is not None:
        return None
    for e in causes(error):
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return e
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                          ConnectionError, TimeoutError)):
            return e
    return None


class Outage:
    """Retries of one storage's calls while its database server is unreachable: with back-off
    (0.25 s doubling to 5 s) for `seconds` from the first failure, then StorageLost; after
    giving up each call tries once until one succeeds again. A call retried after its
    connection dropped may run twice (a trial created twice leaves a spare RUNNING trial that
    a later run's heartbeat fails); every other write is idempotent."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = safe_url(url), seconds
        self.down_since: float | None = None
        self.back_at = -math.inf   # when the last outage ended (time.monotonic())
        self.gave_up = False

    def call(self, function, *args, **kwargs):
        delay, conflicts = 0.25, 0
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                if conflicts < CONFLICT_RETRIES and conflict(error) is not None:
                    conflicts += 1   # another transaction won: at once, and without a word
                    time.sleep(0.05 * conflicts)
                    continue
                e = transient(error)
                if e is None:
                    raise
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    if self.seconds:   # once per outage and process (each worker too)
                        print(f"gsearch: {_LOST} {self.url} ({safe_url(first_line(e))}); "
                              f"retrying for up to {self.seconds:g} s (--storage-retry)",
                              file=sys.stderr, flush=True)
                left = self.seconds - (now - self.down_since)
                if self.gave_up or left <= 0:
                    self.gave_up = True
                    raise StorageLost(
                        f"{_LOST} {self.url} for more than {self.seconds:g} s "
                        f"({safe_url(first_line(e))}); the run stopped: run it again when the "
                        "database is back (it fails and re-runs trials left RUNNING), or allow "
                        "a longer outage with --storage-retry") from None
                time.sleep(min(delay, left))
                delay = min(2 * delay, 5.0)
                continue
            if self.down_since is not None:
                self.back_at = time.monotonic()
            self.down_since, self.gave_up = None, False
            return result

    def give_up(self) -> None:
        """Stop retrying: another process of the run gave up on the same server. Each call
        then tries once."""
        self.gave_up = True
        if self.down_since is None:
            self.down_since = time.monotonic() - self.seconds

    def unsettled(self, seconds: float) -> bool:
        """Whether the server is down now, or came back less than `seconds` ago."""
        return self.down_since is not None or time.monotonic() - self.back_at < seconds


def _outage_of(storage) -> Outage | None:
    """The Outage of a storage from open_storage, also behind the cache of a study's handle;
    None for a storage that is not retried (SQLite, journals, the gRPC proxy)."""
    return getattr(cached_backend(storage), "outage", None)   # storage.rdb.Storage.outage


def give_up(storage) -> None:
    """Calls to `storage` (from open_storage) stop retrying: another process of the run has
    given up on the same server. Each call then tries once."""
    outage = _outage_of(storage)
    if outage is not None:
        outage.give_up()


def with_retry(storage, function, *args, **kwargs):
    """function(*args) (a write that goes around the storage's methods, such as
    _compat.write_intermediate_values), retried and its errors told as the storage's own
    calls are (storage.rdb.Storage.guarded_call)."""
    guarded = getattr(cached_backend(storage), "guarded_call", None)
    return guarded(function, *args, **kwargs) if guarded else function(*args, **kwargs)


class Unbeaten:
    """RUNNING trials with no heartbeat row at all (a process that died between creating a
    trial and its first beat, or gave up during an outage there), taken for stale once this
    process has seen one unchanged (no new curve value or attribute, not beaten) for the grace
    period. Judged by this process's clock only; a live trial of a run with heartbeats off
    writes its curve every epoch and so is not taken for stale unless an epoch lasts longer
    than the grace period."""

    def __init__(self):
        self.seen: dict[int, tuple[float, tuple]] = {}   # trial id -> (seen since, its mark)

    def stale(self, marks: dict[int, tuple], now: float, grace: float) -> list[int]:
        """Of the trials without a heartbeat row, {trial id: mark of its progress} now, those
        whose mark has not changed for `grace` seconds."""
        current, stale = {}, []
        for trial, mark in marks.items():
            first, old = self.seen.get(trial, (now, mark))
            if old != mark:
                first = now
            current[trial] = (first, mark)
            if now - first >= grace:
                stale.append(trial)
        self.seen = current
        return stale

    def forget(self) -> None:
        """Watch every trial afresh (every heartbeat is as old as an outage just over)."""
        self.seen.clear()


class RetryStale(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker stopped beating; the copy also records
    `retry_of` (the dead trial's number) as a user attribute, visible in the dashboard.
    A trial already retried is not retried again (two workers may both see it stale).
    Which worker ran the dead trial (system attributes gsearch:*) is not copied. `enqueued`
    lists the trials this process retried, for the trial loop to run."""

    def __init__(self, max_retry: int | None = None):
        with warnings.catch_warnings():   # Optuna's class is experimental: it warns here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.enqueued: list[int] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if any(t.system_attrs.get(records.RETRY_HISTORY, [])[-1:] == [trial.number]
               for t in study.get_trials(deepcopy=False)):   # Optuna's record of its retries
            return
        if len(trial.system_attrs.get(records.RETRY_HISTORY, [])) >= RETRIES:
            return
        trial.user_attrs = {**trial.user_attrs, records.RETRY_OF: trial.number}
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items()
                              if not k.startswith(records.OWN_PREFIX)}
        super().__call__(study, trial)
        self.enqueued.append(trial.number)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Enqueue a failed trial once more (same parameters and user attributes, `retry_of`),
    as the heartbeat does for a trial whose worker died; at most RETRIES times. Whether it
    was enqueued (not when already retried, or retried RETRIES times)."""
    retry = RetryStale(RETRIES)
    retry(study, trial)
    return bool(retry.enqueued)
