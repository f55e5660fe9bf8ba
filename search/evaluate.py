"""gsearch evaluate: the honest benchmark of the whole search.

For each split seed: a study of its own searches train+validation only, the chosen
model (best trial or top-K ensemble, ranked by the study's value) is retrained on
train+validation and exported, and only then that seed's test split scores it, next
to an RBF-SVM, a logistic regression (logreg) and gradient-boosted trees (HistGB), each
tuned by grouped CV on the same rows.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR
from threadpoolctl import threadpool_limits

from gsearch.data.load import Dataset, describe_data, load_dataset, resolve_data
from gsearch.data.split import Split
from gsearch.data.encode import encoded, encoding_of
from gsearch.models.metrics import metric_scores
from gsearch.models.validation import DEFAULT_METRIC, METRICS, check_metric
from gsearch.search.objectives import Objectives
from gsearch.models.population import resolve_device
from gsearch.search import records
from gsearch.search.export import export_best
from gsearch.search.loop import Space
from gsearch.search.parallel import run_search
from gsearch.search.protocol import Protocol
from gsearch.search.requests import EvaluateRequest
from gsearch.search.space import resolve_space, space_name
from gsearch.search.storage import open_storage, safe_url
from gsearch.search.study import Strategy, finished_count, open_study, set_log_level

DEFAULT_EVAL_STORAGE = "sqlite:///evaluate.db"


@dataclass
class SeedResult:
    split_seed: int      # the split seed, or the test fold (`kind`)
    study: str
    trials: int
    search_value: float  # the search's own estimate for its best trial (validation / CV)
    search_minutes: float  # summed trial durations: the search's cost
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)  # model -> two metrics
    kind: str = "split seed"   # what split_seed is: "split seed" or "test fold"
    shown: tuple[str, str] = ("accuracy", "macro_f1")   # the two metrics of `scores`


def split_label(split_seed: int, protocol: Protocol = Protocol()) -> str:
    """One split's name, and its export's folder: split42; by artist artist-fold1 (a published
    fold) or artist-split42; by a --group column group-COLUMN-split42."""
    if protocol.group is not None:
        return f"group-{re.sub(r'[^A-Za-z0-9_.-]+', '_', protocol.group)}-split{split_seed}"
    if protocol.groups == "track":
        return f"split{split_seed}"
    split = f"fold{protocol.test_fold}" if protocol.test_fold is not None else f"split{split_seed}"
    return f"{protocol.groups}-{split}"


def study_name(split_seed: int, cv: int, protocol: Protocol = Protocol()) -> str:
    """The study of one split: evaluate-split42-cv1, evaluate-artist-fold1-cv1, ..."""
    return f"evaluate-{split_label(split_seed, protocol)}-cv{cv}"


# GridSearchCV's scoring for each metric: the baselines are tuned for what the study optimizes
SCORING = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "macro_f1": "f1_macro",
           "log_loss": "neg_log_loss", "roc_auc": "roc_auc", "rmse": "neg_root_mean_squared_error",
           "mae": "neg_mean_absolute_error", "r2": "r2"}


def second_metric(metric: str) -> str:
    """The metric shown beside the study's in evaluate's table: macro-F1 (accuracy when the
    study's is macro-F1) for a classification, R^2 (RMSE when it is R^2) for a regression."""
    if METRICS[metric].task == "regression":
        return "rmse" if metric == "r2" else "r2"
    return "accuracy" if metric == "macro_f1" else "macro_f1"


def _models(ds: Dataset, seed: int, probabilities: bool) -> dict:
    """name -> (estimator on the encoded rows, or on the raw rows for HistGB, its grid)."""
    if ds.task == "regression":
        return {
            "Ridge": (make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": [0.1, 1, 10, 100]}),
            "SVR": (make_pipeline(StandardScaler(), SVR()), {"svr__C": [1, 10, 100]}),
            "HistGB": (HistGradientBoostingRegressor(max_iter=100, early_stopping=False,
                                                     random_state=seed, categorical_features=_native(ds)),
                       {"learning_rate": [0.1, 0.2], "max_leaf_nodes": [7, 15]}),
        }
    svm = make_pipeline(StandardScaler(), SVC(kernel="rbf"))
    svm_grid = {"svc__C": [1, 3, 10, 30, 100]}
    if probabilities:   # log loss: the SVM's probabilities calibrated on folds of its rows
        svm = CalibratedClassifierCV(svm, ensemble=False)
        svm_grid = {f"estimator__{k}": v for k, v in svm_grid.items()}
    return {
        "RBF-SVM": (svm, svm_grid),
        "logreg": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
                   {"logisticregression__C": [0.01, 0.1, 1, 10]}),
        # trees need no scaling; early stopping off: it would hold out part of each training fold
        "HistGB": (HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=seed,
                                                  categorical_features=_native(ds)),
                   {"learning_rate": [0.1, 0.2], "max_leaf_nodes": [7, 15]}),
    }


def _native(ds: Dataset) -> list[bool] | None:
    """HistGB's own categorical features: the categorical columns of up to 255 categories
    (its bins); a column of more is read as its codes."""
    if "categorical" not in ds.kinds:
        return None
    return [k == "categorical" and len(ds.vocabulary[f]) <= 255 for f, k in zip(ds.features, ds.kinds)]


def _outputs(estimator, X: np.ndarray, ds: Dataset) -> np.ndarray:
    """A fitted baseline's outputs as gsearch's metrics take them: a regression's predictions
    [N, 1]; a classifier's log-probabilities, or for an SVM without them its decision values."""
    if ds.task == "regression":
        return estimator.predict(X)[:, None]
    try:
        return np.log(np.clip(estimator.predict_proba(X), 1e-12, 1.0))
    except AttributeError:   # an SVC made without probability=True
        decision = estimator.decision_function(X)
    return np.stack([-decision / 2, decision / 2], axis=1) if decision.ndim == 1 else decision


def baselines(ds: Dataset, split: Split, seed: int = 0,
              metric: str = "accuracy") -> dict[str, tuple[float, float]]:
    """Baselines tuned by 5-fold group CV on train+validation for `metric`, scored on the test
    split: (the metric, second_metric). A classification: RBF-SVM and logistic regression
    (StandardScaler pipelines, C tuned) and HistGB (scikit-learn's HistGradientBoosting: 100
    boosting rounds, learning rate and leaves per tree tuned, no early stopping, its own
    categorical features and empty cells). A regression: Ridge (alpha tuned), SVR (C tuned),
    HistGB. The SVM, logistic regression, Ridge and SVR read the rows encoded as the search's
    models read them (data.encode, fitted on train+validation).

    HistGB's OpenMP threads are capped at torch's thread count (`--threads`, 1 by default),
    the CPU budget the rest of gsearch keeps to: uncapped it takes every core, which on a
    few hundred rows mostly buys threading overhead and crowds out other work."""
    rows = split.train_val
    encoding = encoding_of(ds, rows)
    encoded_rows = {"train": encoded(ds, encoding, rows), "test": encoded(ds, encoding, split.test)}
    raw_rows = {"train": ds.X[rows], "test": ds.X[split.test]}
    folds = (GroupKFold(n_splits=5, shuffle=True, random_state=seed) if ds.task == "regression"
             else StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed))
    shown = (metric, second_metric(metric))
    scores = {}
    with threadpool_limits(limits=torch.get_num_threads(), user_api="openmp"):
        for name, (estimator, grid) in _models(ds, seed, metric == "log_loss").items():
            X = raw_rows if name == "HistGB" else encoded_rows
            search = GridSearchCV(estimator, grid, cv=folds, scoring=SCORING[metric])
            search.fit(X["train"], ds.y[rows], groups=ds.groups[rows])
            outputs = _outputs(search.best_estimator_, X["test"], ds)
            tested = metric_scores(ds.task, outputs, ds.y[split.test], len(ds.classes))
            scores[name] = tuple(tested[m] for m in shown)
    return scores


def evaluate_seeds(ds: Dataset, *, split_seeds: list[int], trials: int, cv: int,
                   storage: str, out_dir: Path, device: torch.device, ensemble: int | None = None,
                   strategy: Strategy = Strategy(seed=0), seed: int = 0,
                   protocol: Protocol = Protocol(), space: Space | None = None,
                   test_folds: list[int] | None = None, metric: str = "accuracy",
                   missing: str | None = None) -> list[SeedResult]:
    """Search (run_search, `space`: by default the one sized to the table), export and score once per split seed (the protocol's
    split seed replaced by each), or once per published test fold (`test_folds`, with
    protocol.groups "artist"); a split's study is topped up to `trials` finished trials, so
    an interrupted benchmark resumes where it stopped. `seed`: the training seed (and the
    baselines' CV folds)."""
    ds = protocol.prepare(ds)
    if test_folds:
        protocols = {f: replace(protocol, test_fold=f, cv=cv) for f in test_folds}
    else:
        protocols = {s: replace(protocol, split_seed=s, cv=cv) for s in split_seeds}
    kind = "test fold" if test_folds else "split seed"
    splits = {s: p.split(ds) for s, p in protocols.items()}  # data errors before the storage
    for p in protocols.values():   # and more --cv folds than a split allows
        p.train_rows(ds)
    store = open_storage(storage)
    results = []
    for split_seed, split in splits.items():
        label = split_label(protocols[split_seed].split_seed, protocols[split_seed])
        name = study_name(protocols[split_seed].split_seed, cv, protocols[split_seed])
        study = open_study(store, name, protocol=protocols[split_seed], ds=ds, strategy=strategy,
                           objectives=Objectives(metric=metric), space_name=space_name(space))
        if missing is not None and not study.trials:   # --missing: its exports record it
            study.set_user_attr(records.MISSING_WORDS, missing)
        done = finished_count(study)
        if done < trials:
            print(f"{kind} {split_seed}: study '{name}', {len(split.train_val)} train+validation "
                  f"rows searched ({'%d-fold CV' % cv if cv > 1 else 'fixed validation split'}), "
                  f"{len(split.test)} test rows held out")
            run_search(study, ds, trials=trials - done, space=space, device=device, seed=seed)
        manifest = export_best(study, out_dir / label, ds=ds, device=device,
                               ensemble=ensemble).manifest
        shown = (manifest.metric, second_metric(manifest.metric))
        result = SeedResult(split_seed, name, finished_count(study),
                            manifest.validation_score, _search_minutes(study), kind=kind)
        if manifest.members:
            best = manifest.members[0]
            result.scores["MLP best"] = tuple(best.test_scores[m] for m in shown)
            result.scores[f"MLP top-{len(manifest.members)}"] = tuple(manifest.test_scores[m] for m in shown)
        else:
            result.scores["MLP best"] = tuple(manifest.test_scores[m] for m in shown)
        result.scores.update(baselines(ds, split, seed, manifest.metric))
        result.shown = shown
        results.append(result)
    return results


def _search_minutes(study) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds()
               for t in study.get_trials(deepcopy=False)
               if t.datetime_start and t.datetime_complete) / 60


def _mean_std(values: list[float]) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {std:.3f}"


SHORT = {"accuracy": "acc", "macro_f1": "F1", "balanced_accuracy": "bal acc", "log_loss": "log loss",
         "roc_auc": "AUC", "rmse": "RMSE", "mae": "MAE", "r2": "R^2"}


def format_table(results: list[SeedResult]) -> str:
    """Per seed: test accuracy / macro-F1 of every model (the study's metric / the second one:
    SeedResult.shown); then mean ± std over seeds.
    'search value' is the search's own (validation / CV) estimate for its best trial,
    'search min' the summed duration of its trials. A model a seed lacks (a top-4 ensemble
    where another seed's study had 5 trials to average) shows '-' there, and its mean is
    over the seeds that have it."""
    models = list(dict.fromkeys(m for r in results for m in r.scores))
    models.sort(key=lambda m: not m.startswith("MLP"))   # the search's models first (stable)

    def cell(r: SeedResult, m: str) -> str:
        return f"{r.scores[m][0]:.3f} / {r.scores[m][1]:.3f}" if m in r.scores else "-"

    shown = results[0].shown
    head = f"{results[0].kind:>10} {'trials':>6} {'search min':>10} {'search value':>12}" + "".join(
        f" | {m + ' ' + SHORT[shown[0]] + ' / ' + SHORT[shown[1]]:>20}" for m in models)
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.split_seed:>10} {r.trials:>6} {r.search_minutes:>10.1f} {r.search_value:>12.3f}"
                     + "".join(f" | {cell(r, m):>20}" for m in models))
    lines.append("-" * len(head))
    for i, what in enumerate(f"test {METRICS[m].title}" for m in shown):
        lines.append(f"{'mean ± std ' + what:>41}" + "".join(
            f" | {_mean_std([r.scores[m][i] for r in results if m in r.scores]):>20}" for m in models))
    return "\n".join(lines)


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured: one result per split, on the data `data` describes."""

    results: list[SeedResult]
    data: str            # data.load.describe_data of the table
    storage: str         # where the per-split studies are
    folders: str         # where the models are, e.g. evaluation/split<seed>/


def evaluate(request: EvaluateRequest) -> Evaluation:
    """`gsearch evaluate`: search, export and test once per split seed (or published artist
    fold), next to the baselines (evaluate_seeds), on the table `request.data`."""
    set_log_level()
    torch.set_num_threads(request.threads)
    device = resolve_device(request.device)
    protocol = request.protocol
    storage = request.storage or DEFAULT_EVAL_STORAGE
    # data errors surface before the storage is touched
    ds = protocol.prepare(load_dataset(resolve_data(request.data), label=request.label,
                                       drop=request.drop, group=protocol.group,
                                       categorical=request.categorical, task=request.task,
                                       sep=request.sep, max_mb=request.max_data_mb,
                                       missing=request.missing))
    metric = request.metric or DEFAULT_METRIC[ds.task]
    check_metric(metric, ds.task, len(ds.classes))
    results = evaluate_seeds(ds, split_seeds=list(request.split_seeds), trials=request.trials,
                             cv=protocol.cv, storage=storage, out_dir=request.out, device=device,
                             ensemble=request.ensemble,
                             strategy=Strategy(request.sampler, request.pruner, request.seed),
                             seed=request.seed, space=resolve_space(request.space),
                             protocol=protocol, test_folds=list(request.test_folds or []) or None,
                             metric=metric, missing=request.missing)
    where = "artist-fold<K>" if request.test_folds else "split<seed>"
    return Evaluation(results, describe_data(ds), safe_url(storage), f"{request.out}/{where}/")
