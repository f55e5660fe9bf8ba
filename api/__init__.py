"""gsearch.api, the Python API's top floor (a sibling of gsearch.cli): scikit-learn estimators
over gsearch's search, `MLPSearchClassifier` and `MLPSearchRegressor`, and `load`, a fitted
estimator from an export folder. `import gsearch` names them lazily (gsearch/__init__.py); the
library functions the CLI calls (search.runner.run_study, search.export.export_study, ...) are
named there too. docs/python.md is the guide.
"""

from gsearch.api._estimators import MLPSearchClassifier, MLPSearchRegressor
from gsearch.api._load import load

__all__ = ["MLPSearchClassifier", "MLPSearchRegressor", "load"]
