"""Where a feature table comes from, and whether it can be read: checks that cost no pandas.

The CLI runs `check_readable` on --data before it imports torch, Optuna or pandas, so that a
mistyped path is answered at once; `data.load` runs the same check when it reads the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import stat
import zlib
from pathlib import Path

from gsearch import GsearchError

KAGGLE_GTZAN = ("the Kaggle dataset 'GTZAN Dataset - Music Genre Classification' "
                "(kaggle.com/datasets/andradaolteanu/gtzan-dataset-music-genre-classification)")
GET_DATA_HINT = (f"without --data the bundled GTZAN features_30_sec.csv is used; "
                 f"the full dataset with audio is {KAGGLE_GTZAN}")


# The most megabytes of (uncompressed) CSV a command reads by default (--max-data-mb, or the
# environment variable MAX_DATA_ENV). Reading a table takes about 15 MB of memory per MB of a
# numeric CSV and up to 30 per MB of short text cells (measured, data.load), so 512 MB of CSV
# is at most 8-15 GB at its peak: what a laptop holds.
MAX_DATA_MB = 512
MAX_DATA_ENV = "GSEARCH_MAX_DATA_MB"
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK, _PIECE = 1 << 20, 1 << 16   # bytes inflated, and read, at a time


def max_data_mb(value: float | None = None) -> float:
    """The bound on a table's uncompressed megabytes: `value` when given, else the environment
    variable GSEARCH_MAX_DATA_MB when set (export-best, predict and the library read it too),
    else MAX_DATA_MB."""
    if value is not None:
        return float(value)
    text = os.environ.get(MAX_DATA_ENV, "").strip()
    if not text:
        return float(MAX_DATA_MB)
    try:
        bound = float(text)
    except ValueError:
        bound = -1.0
    if not bound > 0:
        raise GsearchError(f"{MAX_DATA_ENV}={text!r} is not a positive number of megabytes; "
                           f"fix or unset it (default {MAX_DATA_MB})")
    return bound


def megabytes(size: int) -> str:
    """A size in MB for a message: whole above 10 MB, else to a tenth (at least 0.1)."""
    mb = size / (1 << 20)
    return f"{mb:,.0f} MB" if mb >= 10 else f"{max(mb, 0.1):.1f} MB"


def too_big(path: str | Path, what: str, bound: float) -> str:
    """The one-line refusal of a table larger than the bound."""
    return (f"{path} {what}; gsearch reads at most {bound:g} MB of CSV (--max-data-mb; reading "
            "takes about 15-30 MB of memory per MB of CSV): raise --max-data-mb (or "
            f"{MAX_DATA_ENV}) if this machine has the memory, or pass fewer rows")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_readable(path: str | Path, error: type[GsearchError] = GsearchError) -> None:
    """Raise `error` (one line) unless `path` is a regular file this process can read (a FIFO,
    a device such as /dev/zero or a socket never ends or cannot be read twice: refused)."""
    path = Path(path)
    if not path.exists():
        raise error(f"no such file: {path}; {GET_DATA_HINT}")
    if path.is_dir():
        raise error(f"{path} is a folder; pass the CSV file inside it with --data")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise error(f"{path} is {_kind(mode)}, not a regular file; save the table to a file and "
                    "pass that")
    if not os.access(path, os.R_OK):
        raise error(f"cannot read {path}: Permission denied")


def inflate(f, path: str | Path, bound: float, keep: bool = True,
            error: type[GsearchError] = GsearchError) -> bytes:
    """The gunzipped content of the open gzip file `f` (every member), inflated a chunk at a
    time and stopped as soon as it passes `bound` megabytes (a decompression bomb is refused
    after reading that much, never inflated whole). `keep` False: only counted (b"")."""
    limit, total, parts = int(bound * (1 << 20)), 0, []
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    start = f.tell()
    size = f.seek(0, os.SEEK_END) - start
    claimed = 0   # the last member's size mod 2**32 (its trailer): it holds at least that much
    if size >= 4:
        f.seek(-4, os.SEEK_END)
        claimed = int.from_bytes(f.read(4), "little")
    f.seek(start)
    try:
        while True:
            data = f.read(_CHUNK)
            if not data:
                break
            at = 0
            while at < len(data):
                if d.eof:   # another member may follow (as gzip.decompress reads them)
                    if not data[at:].strip(b"\x00"):
                        break
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                piece = data[at:at + _PIECE]   # small: what a member leaves is copied
                out = d.decompress(piece, _CHUNK)
                at += len(piece) - len(d.unused_data if d.eof else d.unconsumed_tail)
                total += len(out)
                if claimed > limit and (size > _PIECE or d.eof):   # inflates: the trailer is one
                    total = claimed
                if total > limit:
                    raise error(too_big(path, f"holds more than {bound:g} MB once gunzipped", bound))
                if keep:
                    parts.append(out)
        if not d.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
    except (zlib.error, EOFError) as e:
        raise error(f"{path} is a damaged gzip file ({e}); "
                    "download it again or pass the uncompressed CSV") from None
    return b"".join(parts)


def table_bytes(path: str | Path, bound: float, *, keep: bool = True,
                error: type[GsearchError] = GsearchError) -> bytes:
    """The content of the table at `path`, gunzipped when it starts with the gzip magic number;
    `error` (one line) when it holds more than `bound` megabytes: a plain file by its size, a
    gzipped one counted while it inflates and stopped at the bound. `keep` False: only checked
    (b""). OSError is the caller's to answer."""
    with open(path, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            f.seek(0)
            return inflate(f, path, bound, keep=keep, error=error)
        size = os.fstat(f.fileno()).st_size
        if size > bound * (1 << 20):
            raise error(too_big(path, f"is {megabytes(size)}", bound))
        if not keep:
            return b""
        f.seek(0)
        return f.read()


def check_size(path: str | Path, max_mb: float | None = None,
               error: type[GsearchError] = GsearchError) -> None:
    """Raise `error` (one line) when the table at `path` (readable: check_readable) is larger
    than `max_mb` megabytes (max_data_mb's default): table_bytes without keeping them."""
    try:
        table_bytes(path, max_data_mb(max_mb), keep=False, error=error)
    except OSError:
        return   # the loader says why


def header_names(path: str | Path, sep: str | None = None) -> list[str]:
    """The column names of a table's header line (its first line that is not blank), read from
    its first bytes (plain or gzipped UTF-8; separated by `sep`, else sniffed as data.load
    does); [] unless that line is plain text the loader would read the same way (a binary or
    UTF-16 file, a damaged archive, bytes that are not UTF-8, not a regular file: the loader
    then says why)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO would block, /dev/zero never end
            return []
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if head[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1 << 16)
    except (OSError, zlib.error):
        return []
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, b"PK\x03\x04")) or b"\x00" in head:
        return []
    text = head.decode("utf-8-sig", errors="replace")
    if "\ufffd" in text.rstrip("\ufffd" if len(head) == 1 << 16 else ""):   # (a character cut off)
        return []   # not UTF-8: the loader says where
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator(text, sep))
    try:   # the loader's first row (data.load._parse): blank lines skipped
        names = next((row for row in reader if row and not (len(row) == 1 and not row[0].strip())),
                     None)
        whole = len(head) < 1 << 16 or next(reader, None) is not None   # not cut off
    except csv.Error:
        return []
    if names is None or not whole:
        return []
    return [name.strip() for name in names]


SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars"}


def separator(text: str, sep: str | None = None) -> str:
    """The column separator: `sep` when given, else sniffed from the header line: a comma when
    it holds one, else a semicolon, a tab or a bar (what spreadsheets in other locales write)."""
    if sep is not None:
        return sep
    header = text.lstrip("\n\r").split("\n", 1)[0]
    return next((s for s in SEPARATORS if s in header), ",")
