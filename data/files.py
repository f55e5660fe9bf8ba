"""Where a feature table comes from, and whether it can be read: checks that cost no pandas.

The CLI runs `check_readable` on --data before it imports torch, Optuna or pandas, so that a
mistyped path is answered at once; `data.load` runs the same check when it reads the file.
"""

from __future__ import annotations

import codecs
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


def header_names(path: str | Path) -> list[str]:
    """The column names of a table's header line, read from its first bytes (plain or gzipped,
    UTF-8 or UTF-16; separator sniffed as data.load does); [] when they cannot be read (the
    loader then says why)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if head[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1 << 16)
        utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        text = head.decode("utf-16" if utf16 else "utf-8-sig", errors="ignore")
    except (OSError, zlib.error):
        return []
    line = text.lstrip("\r\n").split("\n", 1)[0]
    sep = next((s for s in (",", ";", "\t", "|") if s in line), ",")
    return [name.strip().strip('"') for name in line.split(sep)]
