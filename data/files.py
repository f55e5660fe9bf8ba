"""Where a feature table comes from, and whether it can be read: checks that cost no pandas.

The CLI runs `check_readable` on --data before it imports torch, Optuna or pandas, so that a
mistyped path is answered at once; `data.load` runs the same check when it reads the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import zlib
from pathlib import Path

from gsearch import GsearchError

KAGGLE_GTZAN = ("the Kaggle dataset 'GTZAN Dataset - Music Genre Classification' "
                "(kaggle.com/datasets/andradaolteanu/gtzan-dataset-music-genre-classification)")
GET_DATA_HINT = (f"without --data the bundled GTZAN features_30_sec.csv is used; "
                 f"the full dataset with audio is {KAGGLE_GTZAN}")


def check_readable(path: str | Path, error: type[GsearchError] = GsearchError) -> None:
    """Raise `error` (one line) unless `path` is a file this process can read."""
    path = Path(path)
    if not path.exists():
        raise error(f"no such file: {path}; {GET_DATA_HINT}")
    if path.is_dir():
        raise error(f"{path} is a folder; pass the CSV file inside it with --data")
    if not os.access(path, os.R_OK):
        raise error(f"cannot read {path}: Permission denied")


def header_names(path: str | Path, sep: str | None = None) -> list[str]:
    """The column names of a table's header line (its first line that is not blank), read from
    its first bytes (plain or gzipped UTF-8; separated by `sep`, else sniffed as data.load
    does); [] unless that line is plain text the loader would read the same way (a binary or
    UTF-16 file, a damaged archive, bytes that are not UTF-8: the loader then says why)."""
    try:
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
