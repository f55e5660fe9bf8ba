"""export-best: retrain the best trial (or the top K as one ensemble) on train+validation,
score it on the untouched test split, and write a self-contained model folder.

Trials are ranked by their study value only (validation or CV accuracy); the test split is
read here once, after the choice, to score the exported model. The members are retrained
together as batched populations (models.population.train_population).

Which trials: selection.chosen_trials. A multi-objective study (accuracy against parameters
or latency) exports one trial, chosen by a rule (selection.Pick: knee, accuracy,
smallest-within D) or by number; trials over the study's limits are never chosen by a rule,
nor put in an ensemble.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch

from gsearch import GsearchError
from gsearch.data.load import Dataset, load_dataset
from gsearch.data.schema import LABEL_COLUMN
from gsearch.data.split import Split
from gsearch.models.config import TrialConfig
from gsearch.data.encode import encoded, encoding_of
from gsearch.models.calibration import (DEFAULT_LEVEL, Calibration, classifier_calibration,
                                        regression_calibration)
from gsearch.models.export import plot_test, save_model
from gsearch.models.folder import Owner, check_target, replacing
from gsearch.models.manifest import REPORT_FILE, ExportManifest, Member
from gsearch.models.metrics import classification_scores, metric_scores, regression_report
from gsearch.models.mlp import Ensemble, Pipeline, Preprocess, scale_logits
from gsearch.models.validation import METRICS
from gsearch.models.population import DivergedError, TrainData, resolve_device, train_population
from gsearch.models.predict import by_rows
from gsearch.search import records
from gsearch.search.dashboard import artifact_dir, attach_export
from gsearch.search.objectives import Objectives, feasible, score_of
from gsearch.search.protocol import Protocol, n_outputs
from gsearch.search.requests import ExportRequest, study_options
from gsearch.search.selection import Pick, chosen_trials, deadline_stopped, parse_pick
from gsearch.search.storage import open_storage
from gsearch.search.storage.url import storage_identity
from gsearch.search.study import load_study, set_log_level, state_counts


def study_data(study: optuna.Study, data_path: str | None = None, *,
               ds: Dataset | None = None) -> tuple[Dataset, Split, Protocol]:
    """The study's data and split, checked against what the study recorded: `ds` when the
    caller holds it already (evaluate), else the file `data_path` or the one recorded."""
    recorded = study.user_attrs
    protocol = Protocol.of(study)
    if ds is None:
        path = data_path or recorded.get(records.DATA_PATH)
        if not path:
            raise GsearchError(f"study '{study.study_name}' does not record its data file; pass --data")
        classes, features = recorded.get(records.CLASSES), recorded.get(records.FEATURES)
        kinds, task = recorded.get(records.KINDS), recorded.get(records.TASK, "classification")
        ds = load_dataset(path, classes=tuple(classes) if classes and task != "regression" else None,
                          label=recorded.get(records.LABEL, LABEL_COLUMN),
                          features=tuple(features) if features is not None else None,
                          kinds=tuple(kinds) if kinds is not None else None, task=task,
                          group=protocol.group, sep=recorded.get(records.SEP),
                          missing=recorded.get(records.MISSING_WORDS))
    ds = protocol.prepare(ds)
    protocol.check(study, ds)
    return ds, protocol.split(ds), protocol


def trial_config(trial: optuna.trial.FrozenTrial) -> TrialConfig:
    """The configuration a trial trained: the whole TrialConfig it recorded (the trial loop
    stores it), or for a trial of a study made before that, its sampled parameters over the
    defaults. A trial a deadline stopped trained the epochs it ran (its config: as many)."""
    recorded = trial.system_attrs.get(records.TRIAL_CONFIG)
    config = TrialConfig.from_dict(recorded if recorded is not None else trial.params)
    ran = trial.user_attrs.get(records.EPOCHS_RUN)
    if trial.state == optuna.trial.TrialState.PRUNED and ran:
        config = replace(config, epochs=int(ran))
    return config


@torch.inference_mode()
def _outputs(model: torch.nn.Module, X, device: torch.device) -> np.ndarray:
    return by_rows(lambda part: model(torch.as_tensor(part, device=device)).cpu().numpy(), X)


def test_report(ds: Dataset, outputs: np.ndarray, rows: np.ndarray) -> dict:
    """The test split's full report: a classifier's scores, per-class report and confusion
    matrix (models.metrics.classification_scores) with every classification metric; a
    regression's RMSE, MAE, R^2 and its predictions against the actual values."""
    y = ds.y[rows]
    if ds.task == "regression":
        return regression_report(y, outputs[:, 0])
    report = classification_scores(y, outputs.argmax(axis=1), ds.classes)
    return {**report, "scores": metric_scores("classification", outputs, y, len(ds.classes))}


@dataclass(frozen=True)
class Exported:
    """What export_best wrote: the folder, its manifest (model.json) and the test split's full
    report (report.json's `test`)."""

    folder: Path
    manifest: ExportManifest
    test: dict


def export_best(study: optuna.Study, out_dir: Path, *, data_path: str | None = None,
                ds: Dataset | None = None, device: torch.device, ensemble: int | None = None,
                pick: Pick | None = None, level: float | None = DEFAULT_LEVEL,
                storage: str | None = None, force: bool = False) -> Exported:
    """Export the top `ensemble` trials averaged as one model (1: the best trial alone;
    None: selection.top_trials' default), or the one trial `pick` names (a multi-objective
    study: knee by default). The data: `ds`, or the file `data_path`, or the study's own
    (study_data). `level`: calibrate the model (a classifier's temperature) and its conformal
    sets or intervals at this level on the validation rows (models.calibration; None: not).
    The folder (models.folder): checked before the retraining (another study's export is
    replaced only with `force`; `storage`: the study's URL, recorded in model.json) and
    written whole or not at all."""
    owner = Owner(study.study_name, storage_identity(storage))
    check_target(out_dir, owner, force=force)
    ds, split, protocol = study_data(study, data_path, ds=ds)
    chosen, rule, holdout = _plan(study, split, ensemble, pick, level)
    objectives = Objectives.of(study)
    rows = split.train if holdout else split.train_val
    encoding = encoding_of(ds, rows)
    configs = [trial_config(t) for t in chosen]
    seeds = [t.user_attrs.get(records.TRIAL_SEED, 0) for t in chosen]
    data = TrainData(X_train=encoded(ds, encoding, rows), y_train=ds.y[rows], n_classes=n_outputs(ds),
                     task=ds.task)
    datas = [data] * len(configs)
    if level is not None and not holdout:   # copies trained on the training rows alone, for the
        datas += [replace(data, X_train=encoded(ds, encoding_of(ds, split.train), split.train),
                          y_train=ds.y[split.train])] * len(configs)   # calibration split
    trained = train_population(configs * (len(datas) // len(configs)), datas,   # before any
                               seeds * (len(datas) // len(configs)), device=device)   # test row is read
    trained, calibrators = trained[:len(configs)], [m for m, _ in trained[len(configs):]]
    if holdout and level is not None:   # the exported members never saw the calibration split
        calibrators = [m for m, _ in trained]
    for trial, (model, history) in zip(chosen, trained):
        if model is None:
            raise DivergedError(f"trial #{trial.number} diverged when retrained on train+validation "
                                f"({history.diverged}); export another with --ensemble")
    X_test = encoded(ds, encoding, split.test)
    members = [Member(config, trial.number, round(score_of(trial), 4),
                      _scores(test_report(ds, _outputs(model, X_test, device), split.test)))
               for trial, config, (model, _) in zip(chosen, configs, trained)]
    models = [model for model, _ in trained]
    calibration = None
    if calibrators and None not in calibrators:
        calibration = _calibrate(ds, split, calibrators, models, X_test, level, device)
    network = models[0] if len(models) == 1 else Ensemble(models, regression=ds.task == "regression").eval()
    report = test_report(ds, _outputs(network, X_test, device), split.test)
    best = chosen[0]
    metric = METRICS[objectives.metric].title
    manifest = ExportManifest(
        classes=ds.classes, features=ds.features, configs=tuple(configs),
        members=tuple(members) if len(models) > 1 else (), task=ds.task,
        encoding=None if encoding.is_identity else encoding, calibration=calibration,
        metric=objectives.metric,
        study=study.study_name, storage=owner.storage, trial_number=best.number,
        validation_score=round(score_of(best), 4), pick=rule,
        objectives=objectives.names, within_limits=feasible(best) if objectives.limits() else None,
        objective=(f"{protocol.cv}-fold CV {metric} on train+validation" if protocol.cv > 1
                   else f"validation {metric}"),
        test_scores=_scores(report), n_test=report["n"],
        retrained_on_rows=int(len(rows)), train_seconds=round(sum(h.seconds for _, h in trained), 3),
        data_sha256=ds.sha256,
        clip_samples=ds.clip_samples,  # predict cuts longer audio into windows of this length
        split=protocol.record(),
        reading=({"missing": study.user_attrs[records.MISSING_WORDS]}   # predict reads rows so
                 if records.MISSING_WORDS in study.user_attrs else None))
    model = network if encoding.is_identity else Pipeline(Preprocess(encoding), network)
    what = f"trial {best.number}" if len(models) == 1 else f"ensemble of {len(models)} trials"
    with replacing(out_dir, owner, force=force) as partial:   # renamed to out_dir when whole
        manifest = save_model(model, manifest, partial)
        (partial / REPORT_FILE).write_text(json.dumps(manifest.report(report), indent=2) + "\n")
        plot_test(ds.task, report, partial / manifest.plot_file, f"{study.study_name} {what}")
    return Exported(out_dir, manifest, report)


# The retraining an export plans for itself, in seconds estimated from its trials' own training
# time: the default ensemble keeps the top trials that fit, and calibration copies are trained
# only when they fit too; else the exported members train on the training rows alone and are
# calibrated on the validation rows themselves (a big table: those rows add little).
EXPORT_SECONDS = 60.0


def _plan(study: optuna.Study, split: Split, ensemble: int | None, pick: Pick | None,
          level: float | None) -> tuple[list, str, bool]:
    """(the trials to export, how they were chosen, whether to retrain on the training rows
    alone): the default ensemble (5) shrunk to what EXPORT_SECONDS allows."""
    chosen, rule = chosen_trials(study, ensemble, pick)
    scale = len(split.train_val) / max(len(split.train), 1)
    cost = [t.user_attrs.get(records.TRAIN_SECONDS, 0.0) * scale for t in chosen]
    if ensemble is None and pick is None and len(chosen) > 1:
        fits = [k for k in range(1, len(chosen) + 1) if sum(cost[:k]) <= EXPORT_SECONDS]
        k = max(fits, default=1)
        if k < len(chosen):
            chosen, rule = chosen_trials(study, k, None)
    holdout = level is not None and 2 * sum(cost[:len(chosen)]) > EXPORT_SECONDS
    return chosen, rule, holdout


def _calibrate(ds: Dataset, split: Split, calibrators: list, models: list, X_test: np.ndarray,
               level: float, device: torch.device) -> Calibration:
    """models.calibration from the calibration copies' outputs on the validation rows and the
    exported members' on the test rows (X_test, encoded as they read it); a classifier's
    temperature is folded into its members' last layers here."""
    X_val = encoded(ds, encoding_of(ds, split.train), split.val)
    calibration = np.stack([_outputs(m, X_val, device) for m in calibrators])
    tested = np.stack([_outputs(m, X_test, device) for m in models])
    if ds.task == "regression":
        return regression_calibration(calibration.mean(axis=0)[:, 0], ds.y[split.val],
                                      tested.mean(axis=0)[:, 0], ds.y[split.test], level)
    result = classifier_calibration(calibration, ds.y[split.val], tested, ds.y[split.test], level)
    for model in models:
        scale_logits(model, 1.0 / result.temperature)
    return result


def _scores(report: dict) -> dict[str, float]:
    """The metrics of a test report: a regression's are at its top, a classifier's under
    "scores" (accuracy and macro-F1 first, as gsearch-mlp/1 recorded them)."""
    if "scores" not in report:
        return {k: report[k] for k in ("rmse", "mae", "r2")}
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], **report["scores"]}


@dataclass(frozen=True)
class Published:
    """An export and where the dashboard shows it: `artifacts`, the artifact folder its
    confusion matrix and report were attached in (None: a server storage without one);
    `notes`, what the pick rule had to say."""

    exported: Exported
    artifacts: Path | None
    notes: tuple[str, ...] = ()


def publish(study: optuna.Study, out_dir: Path, *, storage: str | None, artifacts: Path | None = None,
            device: torch.device, data_path: str | None = None, ds: Dataset | None = None,
            ensemble: int | None = None, pick: Pick | None = None,
            level: float | None = DEFAULT_LEVEL, force: bool = False) -> Published:
    """export_best, then its results attached to the study for the dashboard (the artifact
    folder `artifacts`, by default beside a SQLite file; `storage` None: a study in memory, no
    folder): the one path of `gsearch export-best` and `gsearch run --export`."""
    folder = artifact_dir(artifacts, storage)
    exported = export_best(study, out_dir, data_path=data_path, ds=ds, device=device,
                           ensemble=ensemble, pick=pick, level=level, storage=storage, force=force)
    attach_export(study, exported, folder)
    return Published(exported, folder, tuple(pick.notes) if pick else ())


def export_study(request: ExportRequest, *, ds: Dataset | None = None) -> Published:
    """`gsearch export-best`: the study's best trials (or the one `request.pick` or
    `request.trial` names) retrained, tested and written to `request.out`. `ds`: the table,
    when the caller holds it (a study searched on a DataFrame: data.frame)."""
    chosen = parse_pick(request.pick, list(request.pick_extra))
    if request.trial is not None:
        chosen = Pick("trial", number=request.trial)
    set_log_level()
    torch.set_num_threads(request.threads)
    device = resolve_device(request.device)
    study = load_study(open_storage(request.storage, must_exist=True), request.study)
    if not state_counts(study)["complete"] and not deadline_stopped(study):
        raise GsearchError(f"study '{study.study_name}' has no completed trial yet; run 'gsearch run "
                           f"{study_options(study.study_name, request.storage)}' until one completes "
                           "(with --timeout: a longer one)")
    return publish(study, request.out, storage=request.storage, artifacts=request.artifacts,
                   device=device, data_path=str(request.data) if request.data else None, ds=ds,
                   ensemble=request.ensemble, pick=chosen, level=request.level, force=request.force)
