"""gsearch.search: the Optuna side. A study's protocol and storage, the one trial loop and its
one entrance (`run_search`), parallel workers, ranking, export of the best trials and the honest
benchmark (`evaluate`). The command line (gsearch.cli) and the Python API (gsearch.api) call it.

>>> from gsearch.search import Protocol, SAMPLERS, PRUNERS
>>> sorted(PRUNERS), sorted(SAMPLERS)
(['asha', 'hyperband', 'median', 'none'], ['nsga2', 'random', 'tpe'])
"""

from gsearch import _lazy_exports

_EXPORTS = {
    "Protocol": "gsearch.search.protocol",
    "Objectives": "gsearch.search.objectives",
    "open_storage": "gsearch.search.storage",
    "safe_url": "gsearch.search.storage",
    "open_study": "gsearch.search.study",
    "load_study": "gsearch.search.study",
    "Strategy": "gsearch.search.study",
    "SAMPLERS": "gsearch.search.study",
    "PRUNERS": "gsearch.search.study",
    "suggest_config": "gsearch.search.space",
    "run_search": "gsearch.search.parallel",
    "Workers": "gsearch.search.worker",
    "top_trials": "gsearch.search.selection",
    "pick_trial": "gsearch.search.selection",
    "Pick": "gsearch.search.selection",
    "export_best": "gsearch.search.export",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
