"""The gsearch command line: run, export-best, evaluate, report, studies, dashboard, extract,
predict."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from gsearch import GsearchError, __version__
from gsearch.data.load import DEFAULT_DATA
from gsearch.search.protocol import Protocol
from gsearch.search.storage import DEFAULT_STORAGE, STORAGE_ENV, safe_url
from gsearch.search.study import DEFAULT_POPULATION, DEFAULT_STUDY, PRUNERS, SAMPLERS

storage_option = click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
                              envvar=STORAGE_ENV, show_envvar=True,
                              help="Optuna storage: sqlite:///file.db, postgresql://USER@HOST/DB, "
                                   "mysql://USER@HOST/DB, redis://HOST:6379/0, grpc://HOST:PORT "
                                   "or a journal file NAME.log.")
study_option = click.option("--study", "study_name", default=DEFAULT_STUDY, show_default=True,
                            help="Study name.")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where to train (auto picks CUDA when available).")
cv_option = click.option("--cv", type=click.IntRange(min=1), default=1, show_default=True,
                         help="Score each trial by K-fold track-grouped CV on train+validation "
                              "(1: the fixed validation split). Recorded in the study.")
ensemble_option = click.option("--ensemble", type=click.IntRange(min=1), default=None,
                               help="Export the top K trials (ranked by validation/CV value) as one "
                                    "model averaging their probabilities; 1 = the best trial alone "
                                    "[default: 5, or every completed trial when fewer].")
artifacts_option = click.option(
    "--artifacts", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Artifact folder for the dashboard [default: beside a SQLite file, e.g. "
         "studies-artifacts/ for studies.db; none for a server storage].")
sampler_option = click.option("--sampler", type=click.Choice(list(SAMPLERS)), default="tpe",
                              show_default=True, help="How trials are proposed: TPE (Bayesian) or "
                                                      "random search.")
pruner_option = click.option("--pruner", type=click.Choice(list(PRUNERS)), default="median",
                             show_default=True,
                             help="When a trial stops early: median (below the median of earlier "
                                  "trials after 10 epochs), asha (successive halving), hyperband, "
                                  "none.")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                              help="Torch CPU threads; tiny MLPs train fastest on one.")


def user_errors(command):
    """Turn expected failures into one line on stderr and a non-zero exit."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except GsearchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished trials are saved; run the same command to resume",
                       err=True)
            sys.exit(130)
    return wrapper


def _setup_torch(threads: int, device: str):
    import torch

    from gsearch.models.population import resolve_device

    torch.set_num_threads(threads)
    return resolve_device(device)


def _quiet_optuna(verbose: bool = False) -> None:
    """Optuna's log level, set here once: gsearch prints its own progress."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsearch")
def main() -> None:
    """Hyperparameter search for music-genre MLPs on GTZAN features."""


@main.command()
@click.option("--trials", type=click.IntRange(min=1), default=200, show_default=True,
              help="Trials to add to the study in this run.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="GTZAN feature CSV (features_30_sec.csv or features_3_sec.csv).")
@storage_option
@study_option
@sampler_option
@pruner_option
@click.option("--seed", type=int, default=None, help="Makes sampling and training reproducible.")
@device_option
@threads_option
@click.option("--split-seed", type=int, default=Protocol.split_seed, show_default=True,
              help="Seed of the test holdout and validation split.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=Protocol.test_size, show_default=True,
              help="Fraction of tracks held out for the final test.")
@click.option("--val-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=Protocol.val_size, show_default=True,
              help="Fraction of the remaining tracks used for validation.")
@cv_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop starting new trials after this many seconds.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine sharing the study; --trials is their total.")
@click.option("--heartbeat", type=click.IntRange(min=0), default=10, show_default=True,
              help="Seconds between heartbeats of a running trial (SQLite, PostgreSQL, MySQL); "
                   "a trial silent for 3 beats is failed and run again. 0: off.")
@click.option("--fix", multiple=True, metavar="NAME=VALUE",
              help="Hold a search-space parameter at one value, e.g. --fix epochs=20 (repeatable).")
@click.option("--population", type=click.IntRange(min=1), default=DEFAULT_POPULATION,
              show_default=True,
              help="Trials trained at once as one batched model; 1 trains them one by one.")
@click.option("-v", "--verbose", is_flag=True, help="Log every trial.")
@user_errors
def run(trials, data_path, storage, study_name, sampler, pruner, seed, device, threads, split_seed,
        test_size, val_size, cv, timeout, workers, heartbeat, fix, population, verbose) -> None:
    """Run a study, or resume it with --trials more trials."""
    from gsearch.data.load import load_dataset
    from gsearch.search.parallel import RunSpec, cpu_count, run_search, start_workers_server
    from gsearch.search.space import parse_fixed
    from gsearch.search.storage import open_storage
    from gsearch.search.study import open_study

    if workers > 1:
        start_workers_server()  # its imports run while this process imports its own
    _quiet_optuna(verbose)
    device = _setup_torch(threads, device)
    fixed = parse_fixed(fix)
    protocol = Protocol(test_size=test_size, val_size=val_size, split_seed=split_seed, cv=cv)
    ds = load_dataset(data_path)  # every data error surfaces before the storage is touched
    split = protocol.split(ds)
    study = open_study(open_storage(storage), study_name, protocol=protocol, ds=ds,
                       sampler=sampler, pruner=pruner, seed=seed)
    click.echo(f"study '{study_name}' in {safe_url(storage)}: {len(ds.y)} rows "
               f"({len(split.train)} train / {len(split.val)} validation / {len(split.test)} test, "
               f"test never used by the search), device {device}")
    done = len(study.get_trials(deepcopy=False))
    spec = RunSpec(storage=storage, study=study_name, sampler=sampler, pruner=pruner,
                   seed=None if seed is None else seed + done, train_seed=seed or 0,
                   device=str(device), threads=max(1, min(threads, cpu_count() // workers)),
                   trials=trials, timeout=timeout, heartbeat=heartbeat or None, fixed=fixed,
                   population=population, verbose=verbose)
    run_search(spec, ds, split, study, workers)
    click.echo(f"next: gsearch export-best --study {study_name} --storage {safe_url(storage)}")


@main.command("export-best")
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("export"), show_default=True, help="Folder to write the model to.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Feature CSV (default: the file the study recorded).")
@ensemble_option
@artifacts_option
@device_option
@threads_option
@user_errors
def export_best_command(study_name, storage, out_dir, data_path, ensemble, artifacts, device,
                        threads) -> None:
    """Retrain the top trials (5 by default) or the best, test on the held-out split, export."""
    from gsearch.search.dashboard import artifact_dir, attach_export
    from gsearch.search.export import export_best
    from gsearch.search.storage import open_storage
    from gsearch.search.study import load_study

    _quiet_optuna()
    device = _setup_torch(threads, device)
    study = load_study(open_storage(storage, must_exist=True), study_name)
    artifacts = artifact_dir(artifacts, storage)
    info = export_best(study, out_dir, data_path=str(data_path) if data_path else None, device=device,
                       ensemble=ensemble)
    scores = (f"test accuracy {info['test_accuracy']:.3f}, test macro-F1 {info['test_macro_f1']:.3f} "
              f"({info['n_test']} held-out rows)")
    if "members" in info:
        members = info["members"]
        click.echo(f"top-{len(members)} trials {[m['trial'] for m in members]}: validation "
                   + ", ".join(f"{m['validation_accuracy']:.3f}" for m in members) + "; test alone "
                   + ", ".join(f"{m['test_accuracy']:.3f}" for m in members))
        click.echo(f"ensemble (their mean probability): {scores}")
    else:
        click.echo(f"trial #{info['trial_number']}: validation accuracy "
                   f"{info['validation_accuracy']:.3f}, {scores}")
    click.echo(f"wrote {out_dir}/: model.onnx, model.pt, model.json, report.json, confusion_matrix.png")
    attach_export(study, out_dir, artifacts)
    click.echo(f"dashboard: test metrics noted on trial #{info['trial_number']}, " +
               (f"confusion matrix and report attached to the study (artifacts in {artifacts}/)"
                if artifacts else "no artifacts (pass --artifacts DIR for a server storage)"))


@main.command()
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("report"), show_default=True, help="Folder to write the plots to.")
@user_errors
def report(study_name, storage, out_dir) -> None:
    """Plots of a study (PNG and interactive HTML) and a markdown summary."""
    from gsearch.search.report import write_report
    from gsearch.search.storage import open_storage
    from gsearch.search.study import load_study

    _quiet_optuna()
    study = load_study(open_storage(storage, must_exist=True), study_name)
    files = write_report(study, out_dir, safe_url(storage))
    click.echo(f"wrote {len(files)} files to {out_dir}/: " + ", ".join(f.name for f in files))


@main.command("evaluate")
@click.option("--split-seeds", default="42,0,1", show_default=True,
              help="Comma-separated split seeds; each gets its own study and test split.")
@click.option("--trials", type=click.IntRange(min=1), default=40, show_default=True,
              help="Finished trials per split seed (a study that has them is not searched again).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="GTZAN feature CSV.")
@click.option("--storage", default=None,
              help="Storage for the per-seed studies evaluate-split<seed>-cv<K> "
                   "[default: sqlite:///evaluate.db, apart from studies.db].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("evaluation"), show_default=True,
              help="Folder for the exported models, one subfolder per split seed.")
@cv_option
@ensemble_option
@sampler_option
@pruner_option
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler and training seed.")
@device_option
@threads_option
@user_errors
def evaluate_command(split_seeds, trials, data_path, storage, out_dir, cv, ensemble, sampler, pruner,
                     seed, device, threads) -> None:
    """Honest benchmark: per split seed, search train+validation, export, score on test."""
    from gsearch.search.evaluate import DEFAULT_EVAL_STORAGE, evaluate_seeds, format_table

    try:
        seeds = [int(s) for s in split_seeds.split(",") if s.strip()]
    except ValueError:
        raise GsearchError(f"--split-seeds must be integers separated by commas, got "
                           f"{split_seeds!r}; e.g. 42,0,1") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise GsearchError(f"--split-seeds needs distinct integers, got {split_seeds!r}; e.g. 42,0,1")
    _quiet_optuna()
    device = _setup_torch(threads, device)
    results = evaluate_seeds(data_path, split_seeds=seeds, trials=trials, cv=cv,
                             storage=storage or DEFAULT_EVAL_STORAGE, out_dir=out_dir, device=device,
                             ensemble=ensemble, sampler=sampler, pruner=pruner, seed=seed)
    click.echo(format_table(results))
    click.echo(f"models in {out_dir}/split<seed>/; studies in {safe_url(storage or DEFAULT_EVAL_STORAGE)}")


@main.command()
@storage_option
@user_errors
def studies(storage) -> None:
    """List the studies in a storage with their trial counts and best value."""
    import optuna

    from gsearch.search.storage import open_storage

    _quiet_optuna()
    store = open_storage(storage, must_exist=True)
    summaries = optuna.get_all_study_summaries(store, include_best_trial=True)
    if not summaries:
        click.echo(f"no studies in {safe_url(storage)}")
        return
    states = optuna.trial.TrialState
    columns = ("complete", "pruned", "failed", "running")
    click.echo(f"{'study':<24} {'trials':>6} " + " ".join(f"{c:>8}" for c in columns) + "  best")
    for summary in summaries:
        study_id = store.get_study_id_from_name(summary.study_name)
        counts = [store.get_n_trials(study_id, state) for state in
                  (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)]
        best = "-" if summary.best_trial is None else f"{summary.best_trial.value:.4f}"
        click.echo(f"{summary.study_name:<24} {summary.n_trials:>6} "
                   + " ".join(f"{n:>8}" for n in counts) + f"  {best}")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the dashboard to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@artifacts_option
@user_errors
def dashboard(storage, host, port, artifacts) -> None:
    """Serve optuna-dashboard for a storage."""
    from gsearch.search.dashboard import artifact_dir, serve
    from gsearch.search.storage import open_storage

    _quiet_optuna()
    store = open_storage(storage, must_exist=True)
    artifacts = artifact_dir(artifacts, storage)
    click.echo(f"optuna-dashboard for {safe_url(storage)} at http://{host}:{port}/ "
               f"(artifacts: {artifacts or 'none, pass --artifacts DIR'}; Ctrl-C stops)")
    serve(store, host=host, port=port, artifacts=artifacts)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="CSV to write (Kaggle schema: filename,length,<57 features>,label).")
@click.option("--segment-seconds", type=click.Choice(["30", "3"]), default="30", show_default=True,
              help="30: one row per file, over the whole file (like features_30_sec.csv); "
                   "3: one row per consecutive 3 s segment (like features_3_sec.csv).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (files are extracted in parallel).")
@user_errors
def extract(paths, out, segment_seconds, jobs) -> None:
    """Extract the 57 GTZAN features of audio files (or folders, recursively) into a CSV.
    The label is the parent folder when it is a genre (genres_original/<genre>/<file>)."""
    from gsearch.data.extract import extract_to_csv  # sets the numba cache before librosa loads

    report = extract_to_csv(paths, out, segment_seconds=None if segment_seconds == "30" else 3.0, jobs=jobs)
    done = f"wrote {report.rows} rows from {report.files - len(report.failed)} file(s) to {out}"
    if report.failed:
        raise GsearchError(f"{len(report.failed)} of {report.files} file(s) skipped (listed above); "
                           + (done if report.rows else "nothing written"))
    click.echo(done)


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by 'gsearch export-best'.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Show the K most likely genres [default: 1; with --json: all].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {file, genre, probabilities}.")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
@user_errors
def predict(model_dir, files, top_k, as_json, backend) -> None:
    """Classify audio files (or folders) and feature CSVs (one result per row) with an exported
    model. Audio longer than two of the model's clips is classified in clip-long windows, averaged."""
    import json

    from gsearch.models.predict import ExportedModel, predict_files

    model = ExportedModel(model_dir, backend)
    errors = []

    def report(error: GsearchError) -> None:  # one line per bad file; the others go on
        errors.append(error)
        click.echo(f"error: {error}", err=True)

    predictions = predict_files(model, files, on_error=report)
    if as_json:
        click.echo(json.dumps([p.to_json(top_k) for p in predictions], indent=2))
    else:
        for p in predictions:
            click.echo(p.format(top_k or 1))
    if errors:
        sys.exit(1)


@main.command("serve-storage")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 lets workers on other machines connect.")
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True)
@user_errors
def serve_storage_command(storage, host, port) -> None:
    """Serve a storage to workers through Optuna's gRPC proxy (--storage grpc://HOST:PORT)."""
    from gsearch.search.storage import serve_storage

    _quiet_optuna()
    serve_storage(storage, host=host, port=port, ready=lambda: click.echo(
        f"storage proxy for {safe_url(storage)} at grpc://{host}:{port} (Ctrl-C stops; "
        "workers: gsearch run --storage grpc://HOST:PORT)"))
    click.echo("storage proxy stopped")
    # gRPC's executor threads are joined at interpreter exit; one stuck in a cancelled call
    # would keep a stopped proxy alive (seen once under load), so leave at once: every
    # storage write the proxy made is already committed.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
