"""The gsearch command line: run, export-best, studies, dashboard."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from gsearch import GsearchError, __version__
from gsearch.data.load import DEFAULT_DATA
from gsearch.search.study import DEFAULT_POPULATION, DEFAULT_STORAGE, DEFAULT_STUDY, safe_url

storage_option = click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
                              help="Optuna storage URL (sqlite:///file.db, postgresql://...).")
study_option = click.option("--study", "study_name", default=DEFAULT_STUDY, show_default=True,
                            help="Study name.")
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto, cpu or cuda (auto picks CUDA when available).")
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

    from gsearch.models.train import resolve_device

    torch.set_num_threads(threads)
    return resolve_device(device)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsearch")
def main() -> None:
    """Hyperparameter search for music-genre MLPs on GTZAN features."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@main.command()
@click.option("--trials", type=click.IntRange(min=1), default=200, show_default=True,
              help="Trials to add to the study in this run.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="GTZAN feature CSV (features_30_sec.csv or features_3_sec.csv).")
@storage_option
@study_option
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median",
              show_default=True)
@click.option("--seed", type=int, default=None, help="Makes sampling and training reproducible.")
@device_option
@threads_option
@click.option("--split-seed", type=int, default=42, show_default=True,
              help="Seed of the test holdout and validation split.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Fraction of tracks held out for the final test.")
@click.option("--val-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Fraction of the remaining tracks used for validation.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop starting new trials after this many seconds.")
@click.option("--population", type=click.IntRange(min=1), default=DEFAULT_POPULATION,
              show_default=True,
              help="Trials trained at once as one batched model; 1 trains them one by one.")
@click.option("-v", "--verbose", is_flag=True, help="Log every trial.")
@user_errors
def run(trials, data_path, storage, study_name, sampler, pruner, seed, device, threads, split_seed,
        test_size, val_size, timeout, population, verbose) -> None:
    """Run (or resume) a study: TRIALS more trials."""
    from gsearch.data.load import load_dataset
    from gsearch.data.split import split_dataset
    from gsearch.search.runner import run_study
    from gsearch.search.study import fingerprint, open_storage, open_study

    device = _setup_torch(threads, device)
    ds = load_dataset(data_path)  # every data error surfaces before the storage is touched
    split = split_dataset(ds, test_size=test_size, val_size=val_size, seed=split_seed)
    data = fingerprint(ds, split_seed=split_seed, test_size=test_size, val_size=val_size)
    study = open_study(open_storage(storage), study_name, data=data, sampler=sampler,
                       pruner=pruner, seed=seed)
    click.echo(f"study '{study_name}' in {safe_url(storage)}: {len(ds.y)} rows "
               f"({len(split.train)} train / {len(split.val)} validation / {len(split.test)} test, "
               f"test never used by the search), device {device}")
    run_study(study, ds, split, trials=trials, device=device, seed=seed or 0, timeout=timeout,
              verbose=verbose, population=population)
    click.echo(f"next: gsearch export-best --study {study_name} --storage {safe_url(storage)}")


@main.command("export-best")
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("export"), show_default=True, help="Folder to write the model to.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Feature CSV (default: the file the study recorded).")
@device_option
@threads_option
@user_errors
def export_best_command(study_name, storage, out_dir, data_path, device, threads) -> None:
    """Retrain the best trial, test it on the held-out split, export it."""
    from gsearch.search.export import export_best
    from gsearch.search.study import load_study, open_storage

    device = _setup_torch(threads, device)
    study = load_study(open_storage(storage, must_exist=True), study_name)
    info = export_best(study, out_dir, data_path=str(data_path) if data_path else None, device=device)
    click.echo(f"trial #{info['trial_number']}: validation accuracy {info['validation_accuracy']:.3f}, "
               f"test accuracy {info['test_accuracy']:.3f}, test macro-F1 {info['test_macro_f1']:.3f} "
               f"({info['n_test']} held-out rows)")
    click.echo(f"wrote {out_dir}/: model.onnx, model.pt, model.json, report.json, confusion_matrix.png")


@main.command()
@storage_option
@user_errors
def studies(storage) -> None:
    """List the studies in a storage with their trial counts and best value."""
    import optuna

    from gsearch.search.study import open_storage, state_counts

    store = open_storage(storage, must_exist=True)
    summaries = store.get_all_studies()
    if not summaries:
        click.echo(f"no studies in {safe_url(storage)}")
        return
    header = f"{'study':<24} {'trials':>6} {'complete':>8} {'pruned':>6} {'failed':>6} {'running':>7}  best"
    click.echo(header)
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=store)
        counts = state_counts(study)
        best = "-" if counts["complete"] == 0 else f"{study.best_value:.4f}"
        click.echo(f"{summary.study_name:<24} {len(study.trials):>6} {counts['complete']:>8} "
                   f"{counts['pruned']:>6} {counts['fail']:>6} {counts['running']:>7}  {best}")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the dashboard to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@user_errors
def dashboard(storage, host, port) -> None:
    """Serve optuna-dashboard for a storage."""
    import optuna_dashboard

    from gsearch.search.study import open_storage

    store = open_storage(storage, must_exist=True)
    click.echo(f"optuna-dashboard for {safe_url(storage)} at http://{host}:{port}/ (Ctrl-C stops)")
    optuna_dashboard.run_server(store, host=host, port=port)


if __name__ == "__main__":
    main()
