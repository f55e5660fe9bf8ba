"""gsearch's journal file (`JournalFile`, Optuna's JournalFileBackend) for a disk that fills up:
a write the disk cannot take is undone, so that the journal keeps whole records only, and is
said in one line (resilience.DiskFull); and room is kept on the disk for the writes that end
a run's trials (FAIL), so that a run stopped by a full disk leaves none of them RUNNING (a
journal has no heartbeats: nothing would ever end them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from gsearch.search._compat import journal_fails_trial
from gsearch.search.storage.resilience import disk_full, full_disk_error
from gsearch.search.storage.url import StorageURL

# Bytes of disk kept allocated past the end of a journal file (beyond its size, which does not
# change): a write that would leave less is refused, save the writes that fail trials, which
# may use it. One such write is about 150 bytes.
RESERVE = 64 * 1024
_FALLOC_FL_KEEP_SIZE = 1   # linux/falloc.h


class JournalFile(JournalFileBackend):
    """Optuna's journal file, written as Optuna writes it (one JSON record a line, under its
    symlink lock, so that other versions of gsearch and Optuna share the file), with:

    - a reserve of RESERVE bytes allocated past the file's end (fallocate, keeping the size;
      Linux, where the file system supports it, else none): a write that cannot keep it is
      refused whole before anything is written (DiskFull), except a trial's end as FAIL, which
      may use the reserve;
    - a write the disk took only in part cut back to the file's size before it, so that no
      torn record breaks the journal for every later reader."""

    def __init__(self, location: StorageURL):
        self.location = location
        self.lock = JournalFileSymlinkLock(str(location.path))
        super().__init__(str(location.path), lock_obj=self.lock)

    def append_logs(self, logs: list[dict]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        ending = all(journal_fails_trial(log) for log in logs)
        try:
            self.lock.acquire()
            try:
                self._append(data, reserve=0 if ending else RESERVE)
            finally:
                self.lock.release()
        except OSError as e:
            if disk_full(e) is None:
                raise
            raise full_disk_error(e, str(self.location.path)) from None

    def _append(self, data: bytes, *, reserve: int) -> None:
        fd = os.open(self.location.path, os.O_WRONLY | os.O_APPEND)
        try:
            end = os.fstat(fd).st_size
            if reserve:
                _allocate(fd, end, len(data) + reserve)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, end)   # the journal keeps whole records only
                raise
        finally:
            os.close(fd)


def _allocate(fd: int, offset: int, length: int) -> None:
    """Allocate `length` bytes of disk for the file from `offset` on without changing its size
    (OSError ENOSPC when the disk has not that much left); nothing where the system or the
    file system cannot (no fallocate outside Linux, none on some file systems)."""
    fallocate = _fallocate()
    if fallocate is None:
        return
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(code, os.strerror(code))


_LIBC: list = []


def _fallocate():
    """libc's fallocate(2), or None (not Linux, or no libc to load)."""
    if not _LIBC:
        function = None
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).fallocate
                function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
                function.restype = ctypes.c_int
            except (OSError, AttributeError):
                function = None
        _LIBC.append(function)
    return _LIBC[0]
