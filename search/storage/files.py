"""What is in a storage's file, checked when it is opened and before anything is written to
it: a SQLite file gsearch can write and that is intact, a journal file that is Optuna's; and
the lock that serializes creating SQLite files. (Its folder, and whether it must exist, are
the URL's checks: url.check_url.) Standard library only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gsearch import GsearchError
from gsearch.search.storage.url import StorageURL, causes, first_line

SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
# PRAGMA quick_check reads every page of a SQLite file when it is opened: about 0.1 s for 50 MB
# (bench/bench_outage.py prints it); a larger file gets the header check only, so opening stays
# bounded.
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024


def check_sqlite_file(location: StorageURL) -> None:
    """The existing SQLite file of a storage, one that gsearch can write and that is intact,
    checked before anything is written: a read-only or immutable file (SQLite would fail
    mid-run, or crash on its memory-mapped index), one that is not SQLite, or one with corrupt
    pages (PRAGMA quick_check, for files up to QUICK_CHECK_MAX_BYTES)."""
    import sqlite3   # lazy: only opening a SQLite storage reads one; the CLI starts without it

    path = location.path
    if not path.is_file():
        raise GsearchError(f"{location.safe}: {path} is not a file; choose another path")
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
        rows = [(first_line(e),)]
    if check == "PRAGMA schema_version":
        return
    if rows != [("ok",)]:
        what = " ".join(str(rows[0][0]).replace("*** in database main ***", "").split())
        raise GsearchError(corrupt(path, what, before_writing=True))


def corrupt(path: Path, what: str, *, before_writing: bool = False) -> str:
    """The one line for a SQLite file found corrupt: when it was opened (`before_writing`:
    nothing was written), or by a later read (rdb.Storage: the part of a large file that the
    quick check at opening skips)."""
    written = "nothing was written to it" if before_writing else "the command stopped there"
    return (f"SQLite file {path} is corrupt ({what}); {written}: restore it from a backup, or "
            "recover what is readable with sqlite3's .recover into a new file")


# SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_DAMAGE = {11: "database disk image is malformed", 26: "file is not a database"}


def sqlite_corruption(error: BaseException) -> BaseException | None:
    """The SQLite error behind `error` (through Optuna's and SQLAlchemy's wrappers) that says
    the file is damaged; None for any other error."""
    for e in causes(error):
        code = getattr(e, "sqlite_errorcode", None)   # Python 3.11+
        if type(e).__module__ == "sqlite3" and (
                code is not None and code & 0xFF in _SQLITE_DAMAGE
                or any(words in str(e) for words in _SQLITE_DAMAGE.values())):
            return e
    return None


def check_journal_file(location: StorageURL) -> None:
    """A journal file that is empty, new, or Optuna's (every record of its journal starts
    with {"op_code"); a file of something else is left untouched."""
    path = location.path
    if not (path.is_file() and path.stat().st_size):
        return
    with open(path, "rb") as f:
        head = f.readline(65536)
    if not head.startswith(b'{"op_code"'):
        raise GsearchError(f"{location.url} is not an Optuna journal file; pass another --storage "
                           "(a journal file is a new or existing NAME.log written by gsearch)")


@contextlib.contextmanager
def creation_lock(path: Path):
    """Serializes opening (and so creating) SQLite files in one folder between processes:
    three runs creating a fresh file at once would otherwise race on Optuna's tables ("UNIQUE
    constraint failed: alembic_version.version_num"). An flock on the folder itself, so no
    lock file is left behind; the kernel releases it when its holder dies. POSIX only."""
    try:
        import fcntl   # lazy: POSIX only
        fd = os.open(path.parent, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock
