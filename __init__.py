"""gsearch: hyperparameter search for music-genre MLPs on GTZAN features.

This file is the repository root's __init__.py; setup.cfg installs the root as
the package gsearch, with three folders:
``gsearch.data`` (load, validate, split), ``gsearch.models`` (config, MLP,
training, export, prediction) and ``gsearch.search`` (Optuna study and CLI).
"""

__version__ = "0.1.0"


class GsearchError(Exception):
    """A user-facing error: its message is one line that says what to do."""
