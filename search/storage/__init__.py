"""Storages: a URL -> an Optuna storage, with one-line errors and passwords masked.

sqlite:///file.db (write-ahead log), postgresql://, mysql:// (PyMySQL), redis:// (journal),
a journal file NAME.log, grpc://HOST:PORT (a `gsearch serve-storage` proxy). Trials of RDB
storages beat a heartbeat; one whose process died is failed and run again (`retry_of`).
`serve_storage` runs Optuna's gRPC proxy in front of a database for many workers.

- url: the URL classified once (`StorageURL`), `check_url`, `safe_url`; standard library only
- files: what is in a SQLite or journal file, checked before anything is written to it
- opening: `open_storage` and `serve_storage` (and the lock around creating a server's tables)
- rdb: gsearch's RDBStorage subclasses (stale trials without a heartbeat row; retried calls;
  a full disk or a corrupt SQLite file in one line)
- journal: gsearch's journal file (whole records only, room kept to fail trials on a full disk)
- resilience: the retry through a database outage and its give-up, a full disk, the retry of
  dead trials
"""

from gsearch import _lazy_exports
from gsearch.search.storage.url import (DEFAULT_STORAGE, MAX_STUDY_NAME, STORAGE_ENV, Kind,
                                        StorageError, StorageURL, check_study_name, check_url,
                                        safe_url)

# lazy: these load Optuna and SQLAlchemy (about a second together), which the CLI does not
# need to start (gsearch --help) nor to check a URL; `from gsearch.search.storage import
# open_storage` loads them on first use (PEP 562). (files.py needs neither, and only opening
# a storage reads it.)
_EXPORTS = {
    "QUICK_CHECK_MAX_BYTES": "gsearch.search.storage.files",
    "SQLITE_BUSY_TIMEOUT": "gsearch.search.storage.files",
    "open_storage": "gsearch.search.storage.opening",
    "serve_storage": "gsearch.search.storage.opening",
    "CONNECT_TIMEOUT": "gsearch.search.storage.opening",
    "RETRIES": "gsearch.search.storage.resilience",
    "STORAGE_RETRY": "gsearch.search.storage.resilience",
    "StorageLost": "gsearch.search.storage.resilience",
    "StorageStop": "gsearch.search.storage.resilience",
    "DiskFull": "gsearch.search.storage.resilience",
    "give_up": "gsearch.search.storage.resilience",
    "with_retry": "gsearch.search.storage.resilience",
    "retry_trial": "gsearch.search.storage.resilience",
}
__getattr__, _dir = _lazy_exports(__name__, _EXPORTS)
__all__ = sorted([*_EXPORTS, "DEFAULT_STORAGE", "MAX_STUDY_NAME", "STORAGE_ENV", "Kind",
                  "StorageError", "StorageURL", "check_study_name", "check_url", "safe_url"])


def __dir__() -> list[str]:
    return __all__
