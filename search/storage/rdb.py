"""gsearch's RDB storages: Optuna's RDBStorage (so that Optuna's cache and heartbeat apply to
them) with the stale trials that never got a heartbeat and a full disk or a corrupt SQLite
file told in one line, whatever call meets it (`Storage`, SQLite), and on a database server
every call also retried through an outage (`ServerStorage`). Both pickle as an RDBStorage
does. opening.open_storage makes them."""

from __future__ import annotations

import time

from gsearch import GsearchError
from gsearch.search import _compat
from gsearch.search.storage.files import corrupt, sqlite_corruption
from gsearch.search.storage.resilience import Outage, Unbeaten, disk_full, full_disk_error
from gsearch.search.storage.url import Kind, StorageURL, first_line

# the public methods of RDBStorage that Storage does not guard (nor ServerStorage retry): they
# do not reach the database, or they migrate its schema
_NOT_RETRIED = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "remove_session",
                "upgrade", "get_current_version", "get_head_version", "get_all_versions",
                "check_trial_is_updatable", "guarded_call"}


class Storage(_compat.RDBStorageHooks):
    """An RDBStorage whose stale trials (Optuna's: a heartbeat older than the grace period)
    also include RUNNING trials without a heartbeat row seen unchanged for the grace period
    (resilience.Unbeaten). `outage` is the retry of its calls on a server (ServerStorage);
    None on SQLite. `location`: what the URL names, for messages.

    Each call of the storage (_RETRIED) goes through `guarded_call`, wrapped where it is
    looked up, in __getattribute__, so that every way in (Optuna's cache and heartbeat,
    gsearch, the storage's own methods) is covered: a full disk is one GsearchError
    (resilience.DiskFull), and so is a corrupt SQLite file, wherever a read meets the damage
    (a file over files.QUICK_CHECK_MAX_BYTES is not read whole when it is opened)."""

    def __init__(self, url: str, *, location: StorageURL | None = None,
                 outage: Outage | None = None, **kwargs):
        self.location = location
        self.outage = outage
        self.unbeaten = Unbeaten()
        super().__init__(url, **kwargs)

    def __getattribute__(self, name: str):
        attribute = super().__getattribute__(name)
        if name not in _RETRIED:
            return attribute
        guarded = super().__getattribute__("guarded_call")

        def call(*args, **kwargs):
            return guarded(attribute, *args, **kwargs)
        return call

    def guarded_call(self, function, *args, **kwargs):
        """function(*args) (a call of this storage, or a query around its methods: with_retry),
        retried through an outage (`outage`), with a full disk or a corrupt SQLite file as one
        GsearchError. On SQLite a full disk is first met by emptying the write-ahead log into
        the file (it grows to 4 MB between checkpoints) and trying once more: the call's
        transaction was rolled back."""
        sqlite = self.location is not None and self.location.kind is Kind.SQLITE
        for last in (not sqlite, True):
            try:
                if self.outage is None:
                    return function(*args, **kwargs)
                return self.outage.call(function, *args, **kwargs)
            except GsearchError:
                raise
            except Exception as error:
                if not last and disk_full(error) is not None and self._free_wal():
                    continue
                told = self._told(error)
                if told is None:
                    raise
                raise told from None

    def _told(self, error: BaseException) -> GsearchError | None:
        location = self.location
        if location is None:
            return None
        if disk_full(error) is not None:
            if location.kind is Kind.SQLITE:
                self._free_wal()   # what the writes that end the run's trials (FAIL) need
                return full_disk_error(error, str(location.path))
            return full_disk_error(error, location.safe, server=True)
        damage = sqlite_corruption(error) if location.kind is Kind.SQLITE else None
        if damage is not None:
            return GsearchError(corrupt(location.path, first_line(damage)))
        return None

    def _free_wal(self) -> bool:
        """After SQLite found the disk full: give back the space of its write-ahead log (a
        checkpoint copies it into the file, then truncates it); whether it was emptied (not
        while another connection reads an older state, nor when the file cannot grow)."""
        try:
            with self.engine.connect() as connection:
                busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            return not busy
        except Exception:
            return False

    def stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.grace_period or 2 * self.heartbeat_interval
        now = time.monotonic()
        ids = super().stale_trial_ids(study_id)   # fails while the server is down (retried)
        # Just back from an outage, or this very call retried through one (back_at is set
        # once it returns): every heartbeat is as old as the outage, the others' and this
        # process's own, so the others beat again first, and trials without a heartbeat row
        # are watched afresh.
        if self.outage is not None and self.outage.unsettled(grace):
            self.unbeaten.forget()
            return []
        return ids + self.unbeaten.stale(_compat.unbeaten_trials(self, study_id), now, grace)


# what Storage guards (and ServerStorage retries): Storage's public methods (Optuna's storage
# API, stale_trial_ids) but those above, and the private ones that Optuna's cache calls on it
# directly
_RETRIED = frozenset({name for name in dir(Storage)
                      if not name.startswith("_") and callable(getattr(Storage, name))}
                     - _NOT_RETRIED | _compat.calls_from_cache())


class ServerStorage(Storage):
    """A Storage on a database server (PostgreSQL, MySQL): each call of the storage goes
    through `outage`, so it is retried while the server is unreachable."""

    def __init__(self, url: str, *, outage: Outage, **kwargs):
        super().__init__(url, outage=outage, **kwargs)

