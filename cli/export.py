"""`gsearch export-best` and `gsearch report`: a study's best trials as a model folder, and its
plots."""

from __future__ import annotations

from pathlib import Path

import click

from gsearch.cli._common import (artifacts_option, check, device_option, ensemble_option, lazy,
                                 level_option, storage_option, study_option, threads_option,
                                 user_errors)
from gsearch.search.requests import ExportRequest
from gsearch.search.storage import check_url, safe_url
from gsearch.search.study import check_study_exists


def test_scores(scores: dict | None) -> str:
    """"test accuracy 0.780, test macro-F1 0.774" (a regression: RMSE, MAE, R^2)."""
    names = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy",
             "log_loss": "log loss", "roc_auc": "ROC AUC", "rmse": "RMSE", "mae": "MAE", "r2": "R^2"}
    shown = [(names[k], v) for k, v in (scores or {}).items() if k in names]
    if shown and shown[0][0] == "accuracy":   # a classifier: accuracy and macro-F1 first, as always
        shown = shown[:2] + [s for s in shown[2:] if s[0] not in ("accuracy", "macro-F1")]
    return ", ".join(f"test {name} {value:.3f}" for name, value in shown)


def calibration_line(manifest) -> str:
    """What the calibration measured, in one line."""
    c = manifest.calibration
    if manifest.regression:
        return (f"calibrated on {c.calibration_rows} validation rows: {c.level:.0%} intervals "
                f"(prediction ± {c.threshold:.4g}) hold {c.coverage:.1%} of the test rows")
    return (f"calibrated on {c.calibration_rows} validation rows: temperature {c.temperature:.3g}, "
            f"calibration error {c.ece_before:.3f} -> {c.ece_after:.3f} on test; {c.level:.0%} sets "
            f"hold {c.coverage:.1%} of the test rows ({c.size:.2f} classes on average)")


def print_export(published, out_dir: Path) -> None:
    """What export-best (and run --export) says of the model it wrote (search.export.Published)."""
    for note in published.notes:
        click.echo(f"note: {note}")
    pick = published.exported.manifest.pick or ""
    if pick.startswith("deadline") and pick.endswith("(no trial completed)"):
        click.echo("note: no trial completed before the deadline; the model is made of the trials "
                   "it stopped, best last validation score first, each retrained for the epochs it "
                   "had run (model.json's pick says so); a longer --timeout gives complete ones")
    elif pick.startswith("deadline"):
        click.echo("note: trials the deadline stopped were stopped, not beaten: they rank beside the "
                   "completed ones by their last validation score, each retrained for the epochs it "
                   "had run (model.json's pick says how many)")
    manifest, artifacts = published.exported.manifest, published.artifacts
    scores = f"{test_scores(manifest.test_scores)} ({manifest.n_test} held-out rows)"
    score = manifest.metric.replace("_", " ")
    if manifest.members:
        members = manifest.members
        shown = "" if manifest.metric == "accuracy" else f"{score} "
        click.echo(f"top-{len(members)} trials {[m.trial for m in members]}: validation {shown}"
                   + ", ".join(f"{m.validation_score:.3f}" for m in members) + "; test alone "
                   + ", ".join(f"{(m.test_scores or {}).get(manifest.metric, float('nan')):.3f}"
                               for m in members))
        click.echo(f"ensemble ({'their mean prediction' if manifest.regression else 'their mean probability'}): "
                   f"{scores}")
    else:
        click.echo(f"trial #{manifest.trial_number} (pick: {manifest.pick}): validation {score} "
                   f"{manifest.validation_score:.3f}, {scores}")
    if manifest.calibration is not None:
        click.echo(calibration_line(manifest))
    latency = "-" if manifest.latency_ms is None else f"{manifest.latency_ms:.3f} ms"
    click.echo(f"{manifest.n_params} parameters, ONNX latency {latency} per row (onnxruntime, CPU)")
    click.echo(f"wrote {out_dir}/: model.onnx, model.pt, model.json, report.json, {manifest.plot_file}")
    click.echo(f"dashboard: test metrics noted on trial #{manifest.trial_number}, " +
               (f"{'confusion matrix' if not manifest.regression else 'predicted-actual plot'} and "
                f"report attached to the study (artifacts in {artifacts}/)"
                if artifacts else "no artifacts (pass --artifacts DIR for a server storage)"))


@click.command("export-best", context_settings={"allow_extra_args": True},
               short_help="Retrain the best trials, test them, export a model.")
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), metavar="DIR",
              default=Path("export"), show_default=True,
              help="Folder to write the model to: a new or empty folder, or an export of the same "
                   "study (replaced). Written beside it first and renamed into place when whole.")
@click.option("--force", is_flag=True,
              help="Replace an export of another study in --out (never a folder holding other "
                   "files).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Feature CSV (default: the file the study recorded).")
@ensemble_option
@click.option("--pick", metavar="RULE",
              help="Which one trial to export: knee (default for a study with several objectives: "
                   "the Pareto trial that gives up least accuracy per unit of cost), accuracy (the "
                   "most accurate), or smallest-within D, e.g. --pick smallest-within 0.01 (the "
                   "cheapest trial within D of the best validation accuracy). Trials over the "
                   "study's limits are never picked. A study with several objectives exports one "
                   "model (no --ensemble).")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), default=None,
              help="Export this completed trial alone.")
@level_option
@artifacts_option
@device_option
@threads_option
@click.pass_context
@user_errors
def export_best(ctx, study_name, storage, out_dir, force, data_path, ensemble, pick, trial_number,
                level, artifacts, device, threads) -> None:
    """Retrain the top trials (5 by default) or the best, test on the held-out split, export.
    On a study with several objectives: the trial --pick or --trial names (knee by default)."""
    request = check(ExportRequest(study=study_name, storage=storage, out=out_dir, force=force,
                                  data=data_path,
                                  ensemble=ensemble, pick=pick, pick_extra=tuple(ctx.args),
                                  trial=trial_number, level=level, artifacts=artifacts,
                                  device=device, threads=threads))
    print_export(lazy("gsearch.search.export").export_study(request), out_dir)


@click.command(short_help="Plots and a summary of a study.")
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder to write the plots to [default: report/STUDY, one folder per study].")
@user_errors
def report(study_name, storage, out_dir) -> None:
    """Plots of a study (PNG and interactive HTML) and a markdown summary."""
    check_url(storage, must_exist=True)
    check_study_exists(storage, study_name)
    reports = lazy("gsearch.search.report")
    study = reports.load_finished_study(storage, study_name)
    out_dir = out_dir or reports.default_folder(study.study_name)
    files = reports.write_report(study, out_dir, safe_url(storage))
    click.echo(f"wrote {len(files)} files to {out_dir}/: " + ", ".join(f.name for f in files))
