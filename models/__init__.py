"""gsearch.models: PyTorch, no Optuna. A trial's configuration (`TrialConfig`), the MLP builder,
the one trainer (a population of K >= 1 members), export and prediction.

>>> from gsearch.models import TrialConfig, TrainData, train
>>> TrialConfig(n_layers=2, width=64).describe()[:40]
'n_layers=2, width=64, dropout=0.3, batch'
"""

from gsearch import _lazy_exports

_EXPORTS = {
    "TrialConfig": "gsearch.models.config",
    "build_mlp": "gsearch.models.mlp",
    "Ensemble": "gsearch.models.mlp",
    "TrainData": "gsearch.models.population",
    "History": "gsearch.models.population",
    "Population": "gsearch.models.population",
    "Populations": "gsearch.models.population",
    "train": "gsearch.models.population",
    "train_population": "gsearch.models.population",
    "resolve_device": "gsearch.models.population",
    "classification_scores": "gsearch.models.metrics",
    "save_model": "gsearch.models.export",
    "ExportManifest": "gsearch.models.manifest",
    "ExportedModel": "gsearch.models.predict",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
