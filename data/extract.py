"""`gsearch extract`: audio files -> a feature CSV in the Kaggle schema, over processes.

One row per file (segment_seconds None: the features of the whole file, like
features_30_sec.csv whose rows are whole 30 s GTZAN clips; a longer file is still one row), or
one row per consecutive segment (3 -> like features_3_sec.csv, names `blues.00000.K.wav`).
The label is the parent folder's name, whatever it is: LIBRARY/<label>/<file> (GTZAN's
genres_original/<genre>/<file> is one case), so a library sorted into folders by one's own
labels (sub-genres, moods, a DJ's crates) becomes a table to search on.
"""
from __future__ import annotations

import csv
import os
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from gsearch import GsearchError
from gsearch.data.audio import SUPPORTED_EXTENSIONS, AudioError, extract_file, iter_audio_files
from gsearch.data.schema import COLUMNS, FEATURE_NAMES

Row = tuple[str, int, dict[str, float]]


@dataclass
class ExtractReport:
    files: int                                       # audio files found
    rows: int                                        # rows written
    failed: list[str] = field(default_factory=list)  # one message per skipped file


def _extract_one(path: Path, segment_seconds: float | None) -> list[Row] | str:
    """A file's rows, or the one-line reason it was skipped (runs in worker processes)."""
    try:
        return extract_file(path, segment_seconds)
    except AudioError as e:
        return str(e)


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise GsearchError(f"--out {out} is a folder; give a file name such as {out / 'features.csv'}")
    if not out.parent.is_dir():
        raise GsearchError(f"folder {out.parent} for --out does not exist; create it first")


def _check_unique_tracks(files: list[Path]) -> None:
    """Rows are grouped into tracks by file name (data.load.track_ids): names must not collide."""
    by_stem = defaultdict(list)
    for f in files:
        by_stem[f.stem].append(f)
    clash = next((paths for paths in by_stem.values() if len(paths) > 1), None)
    if clash:
        raise GsearchError(f"{clash[0]} and {clash[1]} share the name {clash[0].stem!r}; rows are "
                           "grouped into tracks by file name, so rename one of them")


def _write_csv(out: Path, rows: list[tuple[Row, str]]) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for (name, length, feats), label in rows:
            writer.writerow([name, length, *(repr(feats[k]) for k in FEATURE_NAMES), label])
    os.replace(tmp, out)  # a complete file or none


def extract_to_csv(paths, out: str | os.PathLike, *, segment_seconds: float | None = None,
                   jobs: int = 1, progress: bool | None = None) -> ExtractReport:
    """Extract every audio file under paths (folders recursively) into the CSV out.

    A file that cannot be read is reported on stderr (one line) and skipped; the CSV holds the
    others. progress: a tqdm bar on stderr (None: only when stderr is a terminal)."""
    out = Path(out)
    _check_out(out)
    files = iter_audio_files(paths)
    if not files:
        raise GsearchError(f"no audio files under {', '.join(map(str, paths))} "
                           f"(looked for {SUPPORTED_EXTENSIONS})")
    _check_unique_tracks(files)
    results: list[list[Row] | str] = [""] * len(files)
    failed = []
    bar = tqdm(total=len(files), unit="file", desc="extract", file=sys.stderr,
               disable=None if progress is None else not progress)

    def done(i: int, result: list[Row] | str) -> None:
        results[i] = result
        if isinstance(result, str):
            failed.append(result)
            bar.write(f"error: {result}; skipped", file=sys.stderr)
        bar.update()

    try:
        with bar:
            if jobs <= 1 or len(files) == 1:
                for i, f in enumerate(files):
                    done(i, _extract_one(f, segment_seconds))
            else:
                with ProcessPoolExecutor(max_workers=min(jobs, len(files))) as pool:
                    futures = {pool.submit(_extract_one, f, segment_seconds): i for i, f in enumerate(files)}
                    for future in as_completed(futures):
                        done(futures[future], future.result())
    except KeyboardInterrupt:
        raise GsearchError(f"interrupted: {out} not written; run the same command again") from None
    rows = [(row, Path(f).parent.name) for f, result in zip(files, results)
            if not isinstance(result, str) for row in result]
    if rows:
        _write_csv(out, rows)
    return ExtractReport(files=len(files), rows=len(rows), failed=failed)
