"""gsearch: hyperparameter search for multilayer perceptrons on tables (GTZAN built in).

This file is the repository root's __init__.py; setup.cfg installs the root as
the package gsearch, with its floors as folders:
``gsearch.data`` (load, validate, split), ``gsearch.models`` (config, MLP,
training, export, prediction), ``gsearch.search`` (the Optuna study: search, export,
evaluate) and ``gsearch.serve`` (the HTTP model server), with the command line in
``gsearch.cli`` on top.
"""

import importlib

__version__ = "0.1.0"


class GsearchError(Exception):
    """A user-facing error: its message is one line that says what to do."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that stopped a job cleanly; its message says what was kept and how
    to go on (e.g. which --trials finishes an interrupted run's count)."""


def lazy_exports(package: str, exports: dict[str, str]):
    """(__getattr__, __dir__) for a package that re-exports names from its modules on first
    use, so `import gsearch.models` costs nothing until a name is used (PEP 562)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
