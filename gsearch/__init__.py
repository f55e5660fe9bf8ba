"""gsearch: hyperparameter search for music-genre MLPs on GTZAN features.

The code lives in three top-level folders, installed under this name:
``gsearch.data`` (load, validate, split), ``gsearch.models`` (config, MLP,
training, export, prediction) and ``gsearch.search`` (Optuna study and CLI).
"""

__version__ = "0.1.0"


class GsearchError(Exception):
    """A user-facing error: its message is one line that says what to do."""
