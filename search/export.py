"""export-best: retrain the best trial (or the top K as one ensemble) on train+validation,
score it on the untouched test split, and write a self-contained model folder.

Trials are ranked by their study value only (validation or CV accuracy); the test
split is read here once, after the choice, to score the exported model.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import torch

from gsearch import GsearchError
from gsearch.data.load import Dataset, load_dataset
from gsearch.data.schema import FEATURE_NAMES
from gsearch.data.split import Split, split_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.export import CONFUSION_FILE, REPORT_FILE, evaluate, plot_confusion, save_model
from gsearch.models.mlp import Ensemble
from gsearch.models.train import TrainData, train
from gsearch.search.objective import study_protocol
from gsearch.search.study import check_fingerprint, fingerprint


# Measured with `gsearch evaluate` (README): the top-5 ensemble beat the single best
# trial on the test split of every split seed, so export-best averages 5 by default.
DEFAULT_ENSEMBLE = 5


def top_trials(study: optuna.Study, k: int | None = 1) -> list[optuna.trial.FrozenTrial]:
    """The k completed trials with the highest value (earlier trial first on ties);
    k=None: DEFAULT_ENSEMBLE, or every completed trial when there are fewer."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise GsearchError(f"study '{study.study_name}' has no completed trial yet; "
                           "run 'gsearch run' until one completes")
    if k is None:
        k = min(DEFAULT_ENSEMBLE, len(complete))
    if k > len(complete):
        raise GsearchError(f"--ensemble {k} needs {k} completed trials, study "
                           f"'{study.study_name}' has {len(complete)}; run more trials or "
                           f"use --ensemble {len(complete)}")
    return sorted(complete, key=lambda t: (-t.value, t.number))[:k]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    return top_trials(study, 1)[0]


def study_data(study: optuna.Study, data_path: str | None) -> tuple[Dataset, Split, dict]:
    """The study's data file and split, checked against what the study recorded."""
    recorded = study.user_attrs
    path = data_path or recorded.get("data_path")
    if not path:
        raise GsearchError(f"study '{study.study_name}' does not record its data file; pass --data")
    options = {k: recorded.get(k, d) for k, d in
               (("test_size", 0.2), ("val_size", 0.2), ("split_seed", 42))}
    ds = load_dataset(path, classes=tuple(recorded["classes"]) if "classes" in recorded else None)
    check_fingerprint(study, fingerprint(ds, **options, cv=study_protocol(study)[0]))
    split = split_dataset(ds, test_size=options["test_size"], val_size=options["val_size"],
                          seed=options["split_seed"])
    return ds, split, options


@torch.inference_mode()
def _predict(model: torch.nn.Module, X, device: torch.device):
    return model(torch.as_tensor(X, device=device)).argmax(dim=1).cpu().numpy()


def export_best(study: optuna.Study, out_dir: Path, *, data_path: str | None,
                device: torch.device, ensemble: int | None = None) -> dict:
    """Export the top `ensemble` trials averaged as one model (1: the best trial alone;
    None: top_trials' default)."""
    if ensemble is not None and ensemble < 1:
        raise GsearchError(f"--ensemble must be at least 1, got {ensemble}")
    chosen = top_trials(study, ensemble)
    ensemble = len(chosen)
    ds, split, options = study_data(study, data_path)
    rows = split.train_val
    data = TrainData(X_train=ds.X[rows], y_train=ds.y[rows], n_classes=len(ds.classes))
    X_test, y_test = ds.X[split.test], ds.y[split.test]

    models, configs, member_test, seconds = [], [], [], 0.0  # member_test: (accuracy, macro-F1)
    for trial in chosen:  # every member is chosen before any test row is read
        config = TrialConfig.from_dict(trial.params)
        model, history = train(config, data, device=device, seed=trial.user_attrs.get("seed", 0))
        models.append(model)
        configs.append(config)
        seconds += history.seconds
        scores = evaluate(y_test, _predict(model, X_test, device), ds.classes)
        member_test.append((scores["accuracy"], scores["macro_f1"]))
    model = models[0] if ensemble == 1 else Ensemble(models).eval()
    report = evaluate(y_test, _predict(model, X_test, device), ds.classes)

    cv = study_protocol(study)[0]
    best = chosen[0]
    meta = {
        "study": study.study_name,
        "trial_number": best.number,
        "validation_accuracy": best.value,
        "objective": f"{cv}-fold CV accuracy on train+validation" if cv > 1 else "validation accuracy",
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
        "n_test": report["n"],
        "retrained_on_rows": int(len(rows)),
        "train_seconds": round(seconds, 3),
        "data_sha256": ds.sha256,
        "clip_samples": ds.clip_samples,  # predict cuts longer audio into windows of this length
        "split": options,
    }
    if ensemble > 1:
        meta.update({"member_trials": [t.number for t in chosen],
                     "member_validation_accuracy": [t.value for t in chosen],
                     "member_test_accuracy": [a for a, _ in member_test],
                     "member_test_macro_f1": [f for _, f in member_test]})
    info = save_model(model, configs[0], ds.classes, FEATURE_NAMES, out_dir, meta,
                      members=configs if ensemble > 1 else None)
    (out_dir / REPORT_FILE).write_text(json.dumps({**meta, "test": report}, indent=2) + "\n")
    what = f"trial {best.number}" if ensemble == 1 else f"ensemble of {ensemble} trials"
    plot_confusion(report, ds.classes, out_dir / CONFUSION_FILE,
                   f"{study.study_name} {what}: test accuracy {report['accuracy']:.1%}")
    return info
