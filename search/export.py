"""export-best: retrain the best trial on train+validation, score it on the untouched
test split, and write a self-contained model folder."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import torch

from gsearch import GsearchError
from gsearch.data.load import load_dataset
from gsearch.data.schema import FEATURE_NAMES
from gsearch.data.split import split_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.export import CONFUSION_FILE, REPORT_FILE, evaluate, plot_confusion, save_model
from gsearch.models.train import TrainData, train
from gsearch.search.study import check_fingerprint, fingerprint


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError:
        raise GsearchError(f"study '{study.study_name}' has no completed trial yet; "
                           "run 'gsearch run' until one completes") from None


def export_best(study: optuna.Study, out_dir: Path, *, data_path: str | None,
                device: torch.device) -> dict:
    best = best_trial(study)
    recorded = study.user_attrs
    path = data_path or recorded.get("data_path")
    if not path:
        raise GsearchError(f"study '{study.study_name}' does not record its data file; pass --data")
    split_options = {k: recorded.get(k, d) for k, d in
                     (("test_size", 0.2), ("val_size", 0.2), ("split_seed", 42))}
    ds = load_dataset(path, classes=tuple(recorded["classes"]) if "classes" in recorded else None)
    check_fingerprint(study, fingerprint(ds, **split_options))
    split = split_dataset(ds, test_size=split_options["test_size"], val_size=split_options["val_size"],
                          seed=split_options["split_seed"])

    config = TrialConfig.from_dict(best.params)
    rows = split.train_val
    data = TrainData(X_train=ds.X[rows], y_train=ds.y[rows], n_classes=len(ds.classes))
    model, history = train(config, data, device=device, seed=best.user_attrs.get("seed", 0))
    with torch.inference_mode():
        logits = model(torch.as_tensor(ds.X[split.test], device=device))
    report = evaluate(ds.y[split.test], logits.argmax(dim=1).cpu().numpy(), ds.classes)

    meta = {
        "study": study.study_name,
        "trial_number": best.number,
        "validation_accuracy": best.value,
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
        "n_test": report["n"],
        "retrained_on_rows": int(len(rows)),
        "train_seconds": round(history.seconds, 3),
        "data_sha256": ds.sha256,
        "clip_samples": ds.clip_samples,  # predict cuts longer audio into windows of this length
        "split": split_options,
    }
    info = save_model(model, config, ds.classes, FEATURE_NAMES, out_dir, meta)
    (out_dir / REPORT_FILE).write_text(json.dumps({**meta, "test": report}, indent=2) + "\n")
    plot_confusion(report, ds.classes, out_dir / CONFUSION_FILE,
                   f"{study.study_name} trial {best.number}: test accuracy {report['accuracy']:.1%}")
    return info
