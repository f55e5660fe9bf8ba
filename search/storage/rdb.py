"""gsearch's RDB storages: Optuna's RDBStorage (so that Optuna's cache and heartbeat apply to
them) with the stale trials that never got a heartbeat (`Storage`, SQLite), and on a database
server every call retried through an outage (`ServerStorage`). Both pickle as an RDBStorage
does. opening.open_storage makes them."""

from __future__ import annotations

import time

from gsearch.search import _compat
from gsearch.search.storage.resilience import Outage, Unbeaten

# the public methods of RDBStorage that ServerStorage does not retry: they do not reach the
# server, or they migrate its schema
_NOT_RETRIED = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "remove_session",
                "upgrade", "get_current_version", "get_head_version", "get_all_versions",
                "check_trial_is_updatable"}


class Storage(_compat.RDBStorageHooks):
    """An RDBStorage whose stale trials (Optuna's: a heartbeat older than the grace period)
    also include RUNNING trials without a heartbeat row seen unchanged for the grace period
    (resilience.Unbeaten). `outage` is the retry of its calls on a server (ServerStorage);
    None on SQLite."""

    def __init__(self, url: str, *, outage: Outage | None = None, **kwargs):
        self.outage = outage
        self.unbeaten = Unbeaten()
        super().__init__(url, **kwargs)

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


# what ServerStorage retries: Storage's public methods (Optuna's storage API, stale_trial_ids)
# but those above, and the private ones that Optuna's cache calls on it directly
_RETRIED = frozenset({name for name in dir(Storage)
                      if not name.startswith("_") and callable(getattr(Storage, name))}
                     - _NOT_RETRIED | _compat.calls_from_cache())


class ServerStorage(Storage):
    """A Storage on a database server (PostgreSQL, MySQL): each call of the storage goes
    through `outage`, so it is retried while the server is unreachable. The calls (_RETRIED)
    are wrapped where they are looked up, in __getattribute__, so that every way in (Optuna's
    cache and heartbeat, gsearch, the storage's own methods) is covered."""

    def __init__(self, url: str, *, outage: Outage, **kwargs):
        super().__init__(url, outage=outage, **kwargs)

    def __getattribute__(self, name: str):
        attribute = super().__getattribute__(name)
        if name not in _RETRIED:
            return attribute
        outage = super().__getattribute__("outage")

        def retried(*args, **kwargs):
            return outage.call(attribute, *args, **kwargs)
        return retried

