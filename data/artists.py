"""GTZAN's artists: which artist each clip is by, so that no artist is on both sides of a split.

GTZAN holds 35 reggae clips by one artist and 24 pop clips by another; a split by track puts an
artist on both sides, and a test score then measures memory of artists as much as genre. The
map shipped beside this module (`gtzan_artists.csv`: `filename`, `artist`, `fold`) gives an
artist for each of the 948 clips that survive Sturm's fault filter (exact repeats and
unrecognizably distorted clips removed), and the fold (1, 2 or 3) of a stratified,
artist-filtered 3-fold split: the split the music-information-retrieval literature reports.
Source: J. H. Foleis' public split (after B. L. Sturm, "The GTZAN dataset: its contents, its
faults, their effects on evaluation, and its future use", 2013); see data/README.md.

>>> from gsearch.data.load import BUNDLED_DATA, load_dataset
>>> ds = by_artist(load_dataset(BUNDLED_DATA))
>>> len(ds.y), ds.n_tracks, ds.n_groups, sorted(set(ds.folds.tolist()))
(948, 948, 412, [1, 2, 3])
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from gsearch.data.load import DataError, Dataset

ARTISTS_FILE = Path(__file__).resolve().with_name("gtzan_artists.csv")


@functools.lru_cache(maxsize=1)
def artist_map() -> pd.DataFrame:
    """The map, indexed by track (a clip's filename without its extension: blues.00000)."""
    frame = pd.read_csv(ARTISTS_FILE, dtype={"filename": str, "artist": np.int64, "fold": np.int64})
    frame["track"] = frame["filename"].map(lambda name: re.sub(r"\.wav$", "", name))
    return frame.set_index("track")


def by_artist(ds: Dataset) -> Dataset:
    """The rows of `ds` whose track has an artist in the map, grouped by artist, each with its
    fold. Works on any table of GTZAN's clips by their Kaggle names: the 30-second table, the
    3-second one (all segments of a clip go with it), or one extracted from GTZAN's audio."""
    if ds.grouping == "artist":
        return ds
    known = artist_map()
    tracks = ds.tracks if ds.tracks is not None else ds.groups
    rows = np.flatnonzero(pd.Index(known.index).get_indexer(tracks) >= 0)
    if not len(rows):
        raise DataError(f"{ds.path}: no row is a GTZAN clip with a known artist (rows are matched "
                        "by their filename, e.g. blues.00000.wav); --groups artist is for GTZAN's "
                        "features, use --groups track for other music")
    mapped = known.loc[tracks[rows]]
    return dataclasses.replace(
        ds, X=ds.X[rows], y=ds.y[rows], filenames=ds.filenames[rows], tracks=tracks[rows],
        groups=np.array([f"artist{a}" for a in mapped["artist"]], dtype=object),
        folds=mapped["fold"].to_numpy(np.int64), grouping="artist")
