"""gsearch.data: pandas and numpy, no torch. A table's schema (GTZAN's Kaggle features are one
case), reading and checking a CSV or DataFrame (the Kaggle features_30_sec.csv ships with
gsearch), grouped splits, the fitted encoding of text columns and empty cells, and audio -> the
57 features.

>>> from gsearch.data import FEATURE_NAMES, GENRES
>>> len(FEATURE_NAMES), GENRES[0]
(57, 'blues')
"""

from gsearch import _lazy_exports

_EXPORTS = {
    "FEATURE_NAMES": "gsearch.data.schema",
    "GENRES": "gsearch.data.schema",
    "Dataset": "gsearch.data.load",
    "DataError": "gsearch.data.load",
    "load_dataset": "gsearch.data.load",
    "resolve_data": "gsearch.data.load",
    "BUNDLED_DATA": "gsearch.data.load",
    "Split": "gsearch.data.split",
    "split_dataset": "gsearch.data.split",
    "extract_file": "gsearch.data.audio",
    "extract_to_csv": "gsearch.data.extract",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
