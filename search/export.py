"""export-best: retrain the best trial (or the top K as one ensemble) on train+validation,
score it on the untouched test split, and write a self-contained model folder.

Trials are ranked by their study value only (validation or CV accuracy); the test split is
read here once, after the choice, to score the exported model. The members are retrained
together as batched populations (models.population.train_population).

A multi-objective study (accuracy against parameters or latency) exports one trial, chosen by
a rule (objectives.Pick: knee, accuracy, smallest-within D) or by number; trials over the
study's limits are never chosen by a rule, nor put in an ensemble.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import torch

from gsearch import GsearchError
from gsearch.data.load import Dataset, load_dataset
from gsearch.data.schema import FEATURE_NAMES
from gsearch.data.split import Split
from gsearch.models.config import TrialConfig
from gsearch.models.export import CONFUSION_FILE, REPORT_FILE, plot_confusion, save_model
from gsearch.models.metrics import classification_scores
from gsearch.models.mlp import Ensemble
from gsearch.models.population import DivergedError, TrainData, train_population
from gsearch.search.objectives import Objectives, Pick, accuracy_of, candidates, feasible, pick_trial
from gsearch.search.protocol import Protocol

# Measured with `gsearch evaluate` (docs/benchmarks.md): the top-5 ensemble beat the single
# best trial on split seeds 42/0/1 and tied it on fresh ones, so export-best averages 5.
DEFAULT_ENSEMBLE = 5


def top_trials(study: optuna.Study, k: int | None = 1) -> list[optuna.trial.FrozenTrial]:
    """The k completed trials within the study's limits with the highest value (earlier
    trial first on ties); k=None: DEFAULT_ENSEMBLE, or every such trial when there are fewer."""
    complete = candidates(study)
    if k is None:
        k = min(DEFAULT_ENSEMBLE, len(complete))
    if k > len(complete):
        raise GsearchError(f"--ensemble {k} needs {k} completed trials, study "
                           f"'{study.study_name}' has {len(complete)}; run more trials or "
                           f"use --ensemble {len(complete)}")
    return sorted(complete, key=lambda t: (-accuracy_of(t), t.number))[:k]


def chosen_trials(study: optuna.Study, ensemble: int | None,
                  pick: Pick | None) -> tuple[list[optuna.trial.FrozenTrial], str]:
    """The trials to export and how they were chosen: `pick` (default knee on a
    multi-objective study), else the top `ensemble` by validation value."""
    if ensemble is not None and ensemble < 1:
        raise GsearchError(f"--ensemble must be at least 1, got {ensemble}")
    multi = len(study.directions) > 1
    if multi and ensemble is not None and ensemble > 1:
        raise GsearchError(f"study '{study.study_name}' has several objectives and exports one "
                           "model; drop --ensemble, and choose with --pick or --trial")
    if multi and pick is None:
        pick = Pick("knee")
    if pick is not None:
        if ensemble is not None and ensemble > 1:
            raise GsearchError(f"--ensemble {ensemble} cannot be combined with --pick or --trial, "
                               "which export one trial; drop one of them")
        return [pick_trial(study, pick)], pick.describe()
    chosen = top_trials(study, ensemble)
    return chosen, "accuracy" if len(chosen) == 1 else f"top-{len(chosen)} by accuracy"


def study_data(study: optuna.Study, data_path: str | None) -> tuple[Dataset, Split, Protocol]:
    """The study's data file and split, checked against what the study recorded."""
    recorded = study.user_attrs
    path = data_path or recorded.get("data_path")
    if not path:
        raise GsearchError(f"study '{study.study_name}' does not record its data file; pass --data")
    protocol = Protocol.of(study)
    ds = load_dataset(path, classes=tuple(recorded["classes"]) if "classes" in recorded else None)
    protocol.check(study, ds)
    return ds, protocol.split(ds), protocol


@torch.inference_mode()
def _predict(model: torch.nn.Module, X, device: torch.device):
    return model(torch.as_tensor(X, device=device)).argmax(dim=1).cpu().numpy()


def export_best(study: optuna.Study, out_dir: Path, *, data_path: str | None,
                device: torch.device, ensemble: int | None = None, pick: Pick | None = None) -> dict:
    """Export the top `ensemble` trials averaged as one model (1: the best trial alone;
    None: top_trials' default), or the one trial `pick` names (a multi-objective study:
    knee by default). Returns the metadata written to model.json."""
    chosen, rule = chosen_trials(study, ensemble, pick)
    ds, split, protocol = study_data(study, data_path)
    rows = split.train_val
    data = TrainData(X_train=ds.X[rows], y_train=ds.y[rows], n_classes=len(ds.classes))
    configs = [TrialConfig.from_dict(t.params) for t in chosen]
    trained = train_population(configs, [data] * len(configs),   # before any test row is read
                               [t.user_attrs.get("seed", 0) for t in chosen], device=device)
    for trial, (model, history) in zip(chosen, trained):
        if model is None:
            raise DivergedError(f"trial #{trial.number} diverged when retrained on train+validation "
                                f"({history.diverged}); export another with --ensemble")
    X_test, y_test = ds.X[split.test], ds.y[split.test]
    members = []
    for trial, config, (model, history) in zip(chosen, configs, trained):
        scores = classification_scores(y_test, _predict(model, X_test, device), ds.classes)
        members.append({"trial": trial.number, "validation_accuracy": round(accuracy_of(trial), 4),
                        "test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"],
                        "hyperparameters": config.to_dict()})
    models = [model for model, _ in trained]
    model = models[0] if len(models) == 1 else Ensemble(models).eval()
    report = classification_scores(y_test, _predict(model, X_test, device), ds.classes)
    best = chosen[0]
    meta = {
        "study": study.study_name,
        "trial_number": best.number,
        "validation_accuracy": round(accuracy_of(best), 4),
        "pick": rule,
        "objectives": list(Objectives.of(study).names),
        **({"within_limits": feasible(best)} if Objectives.of(study).limits() else {}),
        "objective": (f"{protocol.cv}-fold CV accuracy on train+validation" if protocol.cv > 1
                      else "validation accuracy"),
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
        "n_test": report["n"],
        "retrained_on_rows": int(len(rows)),
        "train_seconds": round(sum(h.seconds for _, h in trained), 3),
        "data_sha256": ds.sha256,
        "clip_samples": ds.clip_samples,  # predict cuts longer audio into windows of this length
        "split": {"test_size": protocol.test_size, "val_size": protocol.val_size,
                  "split_seed": protocol.split_seed},
    }
    if len(models) > 1:
        meta["members"] = members
    info = save_model(model, configs, ds.classes, FEATURE_NAMES, out_dir, meta)
    measured = {key: info[key] for key in ("n_params", "latency_ms")}
    (out_dir / REPORT_FILE).write_text(json.dumps({**meta, **measured, "test": report}, indent=2) + "\n")
    what = f"trial {best.number}" if len(models) == 1 else f"ensemble of {len(models)} trials"
    plot_confusion(report, out_dir / CONFUSION_FILE,
                   f"{study.study_name} {what}: test accuracy {report['accuracy']:.1%}")
    return info
