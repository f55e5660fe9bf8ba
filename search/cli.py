"""The gsearch command line: run, export-best, evaluate, report, studies, dashboard, extract,
predict, serve.

Imports: at the top only what the options need (defaults and choices, from modules that load
nothing heavy at import); each command imports the rest when it runs, so that `gsearch --help`
and a mistyped option answer in a few hundredths of a second instead of loading torch, Optuna
and pandas (2 s), and each command loads only its own (predict never imports Optuna).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from gsearch import GsearchError, __version__
from gsearch.data.files import check_readable
from gsearch.search.protocol import Protocol
from gsearch.search.space import PARAMETERS
from gsearch.search.storage import DEFAULT_STORAGE, STORAGE_ENV, StorageError, check_url, safe_url
from gsearch.search.study import (DEFAULT_POPULATION, DEFAULT_PRUNER, DEFAULT_STUDY, PRUNERS, SAMPLERS,
                                  WARM_START_TRIALS)

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
                              show_default=True, help="How trials are proposed: TPE (Bayesian), "
                                                      "random search, or NSGA-II (genetic, for "
                                                      "Pareto fronts).")
pruner_option = click.option("--pruner", type=click.Choice(list(PRUNERS)), default=DEFAULT_PRUNER,
                             show_default=True,
                             help="When a trial stops early: asha (successive halving: only the "
                                  "best third go on at epochs 5, 15 and 45), median (below the "
                                  "median of earlier trials after 10 epochs), hyperband, none.")
label_option = click.option(
    "--label", default="label", show_default=True, metavar="COLUMN",
    help="The label column of the feature table (any 2 or more class names). Recorded in the study.")
drop_option = click.option(
    "--drop", multiple=True, metavar="COLUMN",
    help="A column of the table to leave out of the features (repeatable), e.g. an id or a text "
         "column. Without it every column but the label, filename and length is a feature; a "
         "table with the Kaggle GTZAN features uses exactly those 57.")
groups_option = click.option(
    "--groups", type=click.Choice(Protocol.GROUPS), default=Protocol.groups, show_default=True,
    help="What no split divides: track (all segments of a track on one side), or artist "
         "(GTZAN: only the 948 clips with a known artist, and no artist on two sides: the "
         "score to expect on music by artists the model never heard). Recorded in the study.")
group_option = click.option(
    "--group", metavar="COLUMN", default=None,
    help="A column of your table that says which rows belong together (an artist, a recording "
         "session, a patient): every split (test, validation, CV folds) keeps all rows of one "
         "value on one side, so the test score is the one to expect on groups never seen. Not "
         "a feature. Recorded in the study.")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                              help="Torch CPU threads; tiny MLPs train fastest on one.")


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that a command has said what to do about."""


def user_errors(command):
    """Turn expected failures into one line on stderr and a non-zero exit."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except GsearchError as e:
            click.echo(f"error: {_from_env(e)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as e:
            click.echo(f"\ninterrupted{': ' + str(e) if isinstance(e, Interrupted) else ''}", err=True)
            sys.exit(130)
    return wrapper


def _from_env(error: GsearchError) -> str:
    """The message, saying so when the storage URL at fault came from GSEARCH_STORAGE."""
    ctx = click.get_current_context(silent=True)
    if (not isinstance(error, StorageError) or ctx is None or ctx.params.get("storage") != error.url
            or ctx.get_parameter_source("storage") != click.core.ParameterSource.ENVIRONMENT):
        return str(error)
    message, shown = str(error), safe_url(error.url)
    note = f"from the environment variable {STORAGE_ENV}"
    at = message.find(shown)
    if at < 0:
        return f"{message} ({STORAGE_ENV}={shown} in the environment set --storage; fix or unset it)"
    end = at + len(shown) + (message[at + len(shown):at + len(shown) + 1] == "'")
    return f"{message[:end]} ({note}; fix or unset it, or pass --storage){message[end:]}"


def _where(study_name: str, storage: str) -> str:
    """The options that name this study in a suggested command."""
    where = f"--study {study_name}"
    ctx = click.get_current_context(silent=True)
    if storage != DEFAULT_STORAGE or (ctx is not None and ctx.get_parameter_source("storage")
                                      != click.core.ParameterSource.DEFAULT):
        where += f" --storage {safe_url(storage)}"
    return where


def _check_device(device: str) -> None:
    """--device cuda on a Linux machine without an NVIDIA driver (no /proc/driver/nvidia, no
    libcuda for the loader): refused in milliseconds, before torch is imported. Where a driver
    is there, torch decides (resolve_device), as it does on other systems."""
    if device != "cuda" or sys.platform != "linux" or os.path.exists("/proc/driver/nvidia"):
        return
    import ctypes.util   # lazy: only --device cuda asks

    if ctypes.util.find_library("cuda") is None:
        raise GsearchError("--device cuda was asked for but CUDA is not available here (no NVIDIA "
                           "driver found); use --device cpu or --device auto")


def _setup_torch(threads: int, device: str):
    import torch

    from gsearch.models.population import resolve_device

    torch.set_num_threads(threads)
    return resolve_device(device)


def _space():
    """The search space: None, the documented one sized to the study's table
    (space.SearchSpace), unless the caller of `main` passed another as click's context
    object, main(obj={"space": fn}): how the tests run the real commands on spaces that
    train in a blink. Not an option: a user's space is the documented one."""
    return (click.get_current_context().obj or {}).get("space")


def _quiet_optuna(verbose: bool = False) -> None:
    """Optuna's log level (study.set_log_level): gsearch prints its own progress."""
    from gsearch.search.study import set_log_level

    set_log_level(verbose)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gsearch")
def main() -> None:
    """Hyperparameter search for music-genre MLPs on GTZAN features.

    \b
    Workflow (the GTZAN feature table ships with gsearch):
      gsearch run --trials 200          search; results go to studies.db
      gsearch export-best               retrain the best, test on held-out tracks, export/
      gsearch predict --model export song.wav   or: gsearch serve --model export

    `gsearch COMMAND --help` describes each command; `gsearch dashboard` shows a study.
    """


@main.command(short_help="Search: run a study, or add trials to it.")
@click.option("--trials", type=click.IntRange(min=1), default=200, show_default=True,
              help="How many more trials this run finishes (complete or pruned); a study that "
                   "exists already keeps its trials and gets these on top.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Feature table (CSV, plain or gzipped): GTZAN's features_30_sec.csv or "
                   "features_3_sec.csv, one made by 'gsearch extract', or any table with a label "
                   "column and numeric feature columns [default: data/gtzan/features_30_sec.csv "
                   "if it exists, else the GTZAN features_30_sec.csv bundled with gsearch].")
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
@label_option
@drop_option
@groups_option
@group_option
@click.option("--test-fold", type=click.IntRange(1, 3), default=None,
              help="With --groups artist: test on this fold of GTZAN's published artist-filtered "
                   "3-fold split (1, 2 or 3) instead of a --test-size holdout.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A deadline in seconds from the command's start: no trial starts after it, "
                   "and trials still training stop within an epoch (pruned, reason 'deadline', "
                   "their curves kept).")
@click.option("--export", "export_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              metavar="DIR",
              help="After the search, export the best trials to DIR in this process, as "
                   "'gsearch export-best --out DIR' does (top 5 by default; knee on a study with "
                   "several objectives): a model from one command. --timeout bounds the search; "
                   "the export follows it (a few seconds).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine sharing the study; --trials is their total.")
@click.option("--heartbeat", type=click.IntRange(min=0), default=10, show_default=True,
              help="Seconds between heartbeats of a running trial (SQLite, PostgreSQL, MySQL); "
                   "a trial silent for 3 beats is failed and run again. 0: off.")
@click.option("--storage-retry", type=click.FloatRange(min=0), default=60, show_default=True,
              metavar="SECONDS",
              help="How long a run waits, retrying with back-off, for a database server "
                   "(PostgreSQL, MySQL) whose connection was lost; then it stops in one line. "
                   "0: stop at once.")
@click.option("--fix", multiple=True, metavar="NAME=VALUE",
              help="Hold a search-space parameter at one value inside its range, e.g. --fix "
                   f"epochs=30 (repeatable). NAME: {', '.join(PARAMETERS)}.")
@click.option("--population", type=click.IntRange(min=1), default=DEFAULT_POPULATION,
              show_default=True,
              help="Trials trained at once as one batched model; 1 trains them one by one.")
@click.option("--warm-start", metavar="STUDY", default=None,
              help=f"Start from an earlier study: its {WARM_START_TRIALS} best configurations are "
                   "the first trials of this run (each once per study).")
@click.option("--warm-start-storage", metavar="URL", default=None,
              help="Storage of the --warm-start study [default: --storage].")
@click.option("--objectives", default="accuracy", show_default=True,
              help="What the study optimizes: accuracy (validation accuracy), accuracy,params "
                   "(also fewest trainable parameters) or accuracy,latency (also fastest: median "
                   "CPU milliseconds of a single-row forward pass of the trained model, 100 calls "
                   "after 20 warm-up calls, at --threads; noisy: on a busy 2-core machine repeated "
                   "measurements varied by 3% for small models, up to 2x for large ones). "
                   "Trials are pruned on accuracy either way. Recorded in the study.")
@click.option("--max-params", type=click.IntRange(min=1), default=None,
              help="Limit: trials with more trainable parameters are kept but marked infeasible "
                   "and never exported by a rule. Recorded in the study.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Limit on the latency (measured as for --objectives accuracy,latency); "
                   "slower trials are kept but marked infeasible. Recorded in the study.")
@click.option("-v", "--verbose", is_flag=True, help="Log every trial (Optuna's log) and show "
                                                      "tracebacks of worker errors.")
@user_errors
def run(trials, data_path, storage, study_name, sampler, pruner, seed, device, threads, split_seed,
        test_size, val_size, cv, label, drop, groups, group, test_fold, timeout, export_dir, workers, heartbeat,
        storage_retry, fix, population, warm_start,
        warm_start_storage, objectives, max_params, max_latency_ms, verbose) -> None:
    """Run a study, or resume it with --trials more trials."""
    started = time.monotonic()   # --timeout counts from here
    # what can be checked without torch, Optuna or pandas is checked first, in milliseconds
    _check_device(device)
    if data_path is not None:
        check_readable(data_path)
    check_url(storage)
    from gsearch.search.storage import check_study_name

    check_study_name(study_name)
    if warm_start:
        check_url(warm_start_storage or storage, must_exist=True)
    from gsearch.search._spawn import cpu_count

    # never more workers than trials (one without a trial only costs its start), nor more
    # than 4 per core, which only fight over the cores: 1000 workers on 2 cores took a
    # minute to start for 4 trials of 6 s
    workers = min(workers, trials)
    if workers > 4 * cpu_count():
        click.echo(f"note: --workers {workers} lowered to {4 * cpu_count()}, 4 per core "
                   f"({cpu_count()} here): more only fight over the cores", err=True)
        workers = 4 * cpu_count()
    if sys.stderr.isatty():   # the imports and the data take a few seconds: say so at once
        click.echo("gsearch run: loading PyTorch, Optuna and the data ...", err=True)
    from gsearch.search._spawn import start_workers_server

    if workers > 1:
        start_workers_server()  # its imports run while this process imports its own
    from gsearch.data.load import describe_data, load_dataset, resolve_data
    from gsearch.search.objectives import Objectives
    from gsearch.search.parallel import Workers, run_search
    from gsearch.search.space import SearchSpace, parse_fixed
    from gsearch.search.storage import open_storage
    from gsearch.search.study import Strategy, load_study, open_study, warm_start_configs

    _quiet_optuna(verbose)
    threads = max(1, min(threads, cpu_count() // workers))   # per worker process
    device = _setup_torch(threads, device)
    objectives = Objectives.parse(objectives, max_params=max_params, max_latency_ms=max_latency_ms)
    protocol = Protocol(test_size=test_size, val_size=val_size, split_seed=split_seed, cv=cv,
                        groups=groups, test_fold=test_fold, group=group)
    # data errors surface before the storage is touched
    ds = protocol.prepare(load_dataset(resolve_data(data_path), label=label, drop=drop, group=group))
    split = protocol.split(ds)                  # and split errors (too few tracks of a class)
    space = SearchSpace(protocol.train_rows(ds))   # what open_study sizes a new study's space to
    strategy = Strategy(sampler, pruner, seed, parse_fixed(fix, space))
    warm = []   # read before this run's study is touched: a bad source leaves it as it was
    if warm_start:
        source = warm_start_storage or storage
        warm = warm_start_configs(load_study(open_storage(source, must_exist=True), warm_start),
                                  strategy.fixed, space=space)[:trials]
    study = open_study(open_storage(storage, heartbeat=heartbeat or None, retry=storage_retry),
                       study_name,
                       protocol=protocol, ds=ds, strategy=strategy, objectives=objectives,
                       space=space)
    click.echo(f"data: {describe_data(ds)}")
    if protocol.grouping != "track":
        click.echo(f"protocol: {protocol.describe()}")
    sized, gtzan = SearchSpace.of(study), SearchSpace()
    if (sized.batch_sizes, sized.epochs) != (gtzan.batch_sizes, gtzan.epochs):   # GTZAN's: no word
        click.echo(f"search space: {sized.describe()}")
    if warm_start:
        before = len(study.get_trials(deepcopy=False))
        for params in warm:
            study.enqueue_trial(params, skip_if_exists=True)
        click.echo(f"warm start: {len(study.get_trials(deepcopy=False)) - before} of the best "
                   f"configurations of study '{warm_start}' in {safe_url(source)} run first "
                   f"({len(warm)} fit this search space; each runs once per study)")
    click.echo(f"study '{study_name}' in {safe_url(storage)}: {len(ds.y)} rows "
               f"({len(split.train)} train / {len(split.val)} validation / {len(split.test)} test, "
               f"test never used by the search), device {device}; {objectives.describe()}")
    finished = _finished(study)
    try:
        run_search(study, ds, trials=trials, space=_space(), device=device, seed=seed or 0,
                   timeout=None if timeout is None else max(0.0, timeout - (time.monotonic() - started)),
                   population=population,
                   workers=Workers(workers, storage, strategy, heartbeat or None, threads, verbose,
                                   storage_retry))
    except KeyboardInterrupt:
        done = _finished(study) - finished
        raise Interrupted(
            f"finished trials are saved ({done} of this run's {trials}); trials in flight are "
            f"marked interrupted. Run again with --trials {max(1, trials - done)} to finish this "
            f"run's count (--trials N always adds N more)") from None
    done = _finished(study) - finished
    if timeout is not None and done < trials:
        click.echo(f"deadline: --timeout {timeout:g} stopped the run after {done} of the {trials} "
                   "trials asked (--trials) finished")
    where = _where(study_name, storage)
    completed = _completed(study)
    if completed and export_dir is not None:
        _export(study, export_dir, storage, None, device=device, ds=ds)
        return
    if completed:
        click.echo(f"next: gsearch export-best {where}")
        return
    again = (f"run again with a longer --timeout (the study resumes), e.g. gsearch run {where} "
             f"--timeout {max(60, 3 * int(timeout or 20))}")
    if export_dir is not None:
        raise GsearchError(f"no trial has completed yet, so nothing was exported to {export_dir}: "
                           f"{again} --export {export_dir}")
    click.echo(f"no trial has completed yet, so there is nothing to export: {again}; or remove "
               f"the study: gsearch studies --delete {study_name}"
               + where.removeprefix(f"--study {study_name}"))


def _completed(study) -> int:
    from gsearch.search.study import state_counts

    return state_counts(study)["complete"]


def _finished(study) -> int:
    from gsearch.search.study import state_counts

    counts = state_counts(study)
    return counts["complete"] + counts["pruned"]


@main.command("export-best", context_settings={"allow_extra_args": True},
              short_help="Retrain the best trials, test them, export a model.")
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("export"), show_default=True, help="Folder to write the model to.")
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
@artifacts_option
@device_option
@threads_option
@click.pass_context
@user_errors
def export_best_command(ctx, study_name, storage, out_dir, data_path, ensemble, pick, trial_number,
                        artifacts, device, threads) -> None:
    """Retrain the top trials (5 by default) or the best, test on the held-out split, export.
    On a study with several objectives: the trial --pick or --trial names (knee by default)."""
    _check_device(device)
    check_url(storage, must_exist=True)
    if data_path is not None:
        check_readable(data_path)
    from gsearch.search.selection import Pick, parse_pick
    from gsearch.search.storage import open_storage
    from gsearch.search.study import load_study

    chosen = parse_pick(pick, ctx.args)
    if trial_number is not None:
        if chosen is not None:
            raise GsearchError("--pick and --trial both choose the trial; pass one of them")
        chosen = Pick("trial", number=trial_number)
    _quiet_optuna()
    device = _setup_torch(threads, device)
    study = load_study(open_storage(storage, must_exist=True), study_name)
    if not _completed(study):
        raise GsearchError(f"study '{study_name}' has no completed trial yet; run 'gsearch run "
                           f"{_where(study_name, storage)}' until one completes (with --timeout: "
                           "a longer one)")
    _export(study, out_dir, storage, artifacts, data_path=str(data_path) if data_path else None,
            device=device, ensemble=ensemble, pick=chosen)


def _export(study, out_dir: Path, storage: str, artifacts: Path | None, *, device, data_path=None,
            ds=None, ensemble=None, pick=None) -> None:
    """export_best, then what export-best prints and attaches to the dashboard: the one path
    of `gsearch export-best` and `gsearch run --export`."""
    from gsearch.search.dashboard import artifact_dir, attach_export
    from gsearch.search.export import export_best

    artifacts = artifact_dir(artifacts, storage)
    info = export_best(study, out_dir, data_path=data_path, ds=ds, device=device, ensemble=ensemble,
                       pick=pick)
    for note in pick.notes if pick else ():
        click.echo(f"note: {note}")
    scores = (f"test accuracy {info['test_accuracy']:.3f}, test macro-F1 {info['test_macro_f1']:.3f} "
              f"({info['n_test']} held-out rows)")
    if "members" in info:
        members = info["members"]
        click.echo(f"top-{len(members)} trials {[m['trial'] for m in members]}: validation "
                   + ", ".join(f"{m['validation_accuracy']:.3f}" for m in members) + "; test alone "
                   + ", ".join(f"{m['test_accuracy']:.3f}" for m in members))
        click.echo(f"ensemble (their mean probability): {scores}")
    else:
        click.echo(f"trial #{info['trial_number']} (pick: {info['pick']}): validation accuracy "
                   f"{info['validation_accuracy']:.3f}, {scores}")
    latency = "-" if info["latency_ms"] is None else f"{info['latency_ms']:.3f} ms"
    click.echo(f"{info['n_params']} parameters, ONNX latency {latency} per row (onnxruntime, CPU)")
    click.echo(f"wrote {out_dir}/: model.onnx, model.pt, model.json, report.json, confusion_matrix.png")
    attach_export(study, out_dir, artifacts)
    click.echo(f"dashboard: test metrics noted on trial #{info['trial_number']}, " +
               (f"confusion matrix and report attached to the study (artifacts in {artifacts}/)"
                if artifacts else "no artifacts (pass --artifacts DIR for a server storage)"))


@main.command(short_help="Plots and a summary of a study.")
@study_option
@storage_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder to write the plots to [default: report/STUDY, one folder per study].")
@user_errors
def report(study_name, storage, out_dir) -> None:
    """Plots of a study (PNG and interactive HTML) and a markdown summary."""
    check_url(storage, must_exist=True)
    from gsearch.search.report import default_folder, write_report
    from gsearch.search.storage import open_storage
    from gsearch.search.study import load_study

    _quiet_optuna()
    study = load_study(open_storage(storage, must_exist=True), study_name)
    if not _completed(study):
        raise GsearchError(f"study '{study_name}' has no completed trial yet; run 'gsearch run "
                           f"{_where(study_name, storage)}' until one completes")
    out_dir = out_dir or default_folder(study_name)
    files = write_report(study, out_dir, safe_url(storage))
    click.echo(f"wrote {len(files)} files to {out_dir}/: " + ", ".join(f.name for f in files))


@main.command("evaluate", short_help="Benchmark the search over several test splits.")
@click.option("--split-seeds", default="42,0,1", show_default=True,
              help="Comma-separated split seeds; each gets its own study and test split.")
@click.option("--trials", type=click.IntRange(min=1), default=40, show_default=True,
              help="Finished trials per split seed (a study that has them is not searched again).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Feature table, as for run [default: data/gtzan/features_30_sec.csv if it "
                   "exists, else the GTZAN features_30_sec.csv bundled with gsearch].")
@click.option("--storage", default=None,
              help="Storage for the per-split studies evaluate-split<seed>-cv<K> (by artist: "
                   "evaluate-artist-fold<K>-cv<K>) "
                   "[default: sqlite:///evaluate.db, apart from studies.db].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("evaluation"), show_default=True,
              help="Folder for the exported models, one subfolder per split seed.")
@cv_option
@label_option
@drop_option
@groups_option
@group_option
@click.option("--test-folds", default=None, metavar="K,K,...",
              help="With --groups artist: the published artist folds to test on, each with its "
                   "own study (instead of --split-seeds) [default: 1,2,3].")
@ensemble_option
@sampler_option
@pruner_option
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler and training seed.")
@device_option
@threads_option
@click.pass_context
@user_errors
def evaluate_command(ctx, split_seeds, trials, data_path, storage, out_dir, cv, label, drop, groups,
                     group, test_folds, ensemble, sampler, pruner, seed, device, threads) -> None:
    """Honest benchmark: per split seed (or, with --groups artist, per published artist fold),
    search train+validation, export, score on test."""
    try:
        seeds = [int(s) for s in split_seeds.split(",") if s.strip()]
    except ValueError:
        raise GsearchError(f"--split-seeds must be integers separated by commas, got "
                           f"{split_seeds!r}; e.g. 42,0,1") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise GsearchError(f"--split-seeds needs distinct integers, got {split_seeds!r}; e.g. 42,0,1")
    folds = None
    if groups == "artist":
        if ctx.get_parameter_source("split_seeds") != click.core.ParameterSource.DEFAULT:
            raise GsearchError("--groups artist tests on GTZAN's published artist folds; pass "
                               "--test-folds (e.g. 1,2,3) instead of --split-seeds")
        text = test_folds or "1,2,3"
        folds = [int(f) for f in text.split(",") if f.strip().isdigit()]
        if (len(folds) != len([f for f in text.split(",") if f.strip()]) or not folds
                or len(set(folds)) != len(folds) or not set(folds) <= {1, 2, 3}):
            raise GsearchError(f"--test-folds takes distinct folds among 1, 2, 3, got {text!r}; "
                               "e.g. 1,2,3")
    elif test_folds is not None:
        raise GsearchError("--test-folds picks GTZAN's published artist folds; add --groups "
                           "artist, or use --split-seeds")
    _check_device(device)
    if data_path is not None:
        check_readable(data_path)
    if storage is not None:
        check_url(storage)
    from gsearch.data.load import describe_data, load_dataset, resolve_data
    from gsearch.search.evaluate import DEFAULT_EVAL_STORAGE, evaluate_seeds, format_table
    from gsearch.search.study import Strategy

    _quiet_optuna()
    device = _setup_torch(threads, device)
    protocol = Protocol(groups=groups, group=group)
    # data errors surface before the storage is touched
    ds = protocol.prepare(load_dataset(resolve_data(data_path), label=label, drop=drop, group=group))
    results = evaluate_seeds(ds, split_seeds=seeds, trials=trials, cv=cv,
                             storage=storage or DEFAULT_EVAL_STORAGE, out_dir=out_dir, device=device,
                             ensemble=ensemble, strategy=Strategy(sampler, pruner, seed), seed=seed,
                             space=_space(), protocol=protocol, test_folds=folds)
    click.echo(format_table(results))
    click.echo(f"data: {describe_data(ds)}")
    where = "artist-fold<K>" if folds else "split<seed>"
    click.echo(f"models in {out_dir}/{where}/; studies in {safe_url(storage or DEFAULT_EVAL_STORAGE)}")


@main.command(short_help="List the studies in a storage, or delete one.")
@storage_option
@click.option("--delete", "delete_name", metavar="NAME", default=None,
              help="Delete the study NAME and all its trials from the storage (for example one "
                   "that a too-short --timeout left without a completed trial).")
@user_errors
def studies(storage, delete_name) -> None:
    """List the studies in a storage with their trial counts, best validation accuracy and,
    for a study with several objectives, the number of trials on its Pareto front."""
    check_url(storage, must_exist=True)
    import optuna

    from gsearch.search.storage import open_storage

    _quiet_optuna()
    store = open_storage(storage, must_exist=True)
    if delete_name is not None:
        _delete_study(store, delete_name, storage)
        return
    from gsearch.search import records
    from gsearch.search.objectives import accuracy_of, feasible
    from gsearch.search.selection import pareto_front

    summaries = optuna.get_all_study_summaries(store, include_best_trial=True)
    if not summaries:
        click.echo(f"no studies in {safe_url(storage)}")
        return
    states = optuna.trial.TrialState
    columns = ("complete", "pruned", "failed", "running", "interrupted")
    click.echo(f"{'study':<24} {'trials':>6} " + " ".join(f"{c:>8}" for c in columns)
               + f" {'pareto':>6}  best")
    for summary in summaries:
        study_id = store.get_study_id_from_name(summary.study_name)
        counts = [store.get_n_trials(study_id, state) for state in
                  (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)]
        interrupted = sum(records.INTERRUPTED in t.user_attrs for t in
                          store.get_all_trials(study_id, deepcopy=False, states=(states.FAIL,)))
        counts[2] -= interrupted   # failed: the trials whose training or code failed
        counts.append(interrupted)
        best = "-" if summary.best_trial is None else f"{summary.best_trial.value:.4f}"
        front = "-"
        if len(summary.directions) > 1:
            complete = store.get_all_trials(study_id, deepcopy=False, states=(states.COMPLETE,))
            ok = [t for t in complete if feasible(t)]
            front = str(len(pareto_front(ok)))
            best = f"{max(map(accuracy_of, ok)):.4f}" if ok else "-"
        click.echo(f"{_printable(summary.study_name):<24} {summary.n_trials:>6} "
                   + " ".join(f"{n:>8}" for n in counts) + f" {front:>6}  {best}")


def _printable(name: str) -> str:
    """A study name for a terminal table: control characters (newline, ESC...) as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _delete_study(store, name: str, storage: str) -> None:
    """Delete one study of a storage, after checking that it is there."""
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    if name not in names:
        raise GsearchError(f"no study '{name}' in {safe_url(storage)}; "
                           + (f"its studies: {', '.join(names)}" if names else "it has no studies"))
    n_trials = len(store.get_all_trials(store.get_study_id_from_name(name), deepcopy=False))
    optuna.delete_study(study_name=name, storage=store)
    click.echo(f"deleted study '{name}' ({n_trials} trials) from {safe_url(storage)}")


@main.command(short_help="Browse a study in optuna-dashboard.")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the dashboard to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Port of the dashboard's web page.")
@artifacts_option
@user_errors
def dashboard(storage, host, port, artifacts) -> None:
    """Serve optuna-dashboard for a storage."""
    check_url(storage, must_exist=True)
    from gsearch.search.dashboard import artifact_dir, serve
    from gsearch.search.storage import open_storage

    _quiet_optuna()
    store = open_storage(storage, must_exist=True)
    artifacts = artifact_dir(artifacts, storage)
    click.echo(f"optuna-dashboard for {safe_url(storage)} at http://{host}:{port}/ "
               f"(artifacts: {artifacts or 'none, pass --artifacts DIR'}; Ctrl-C stops)")
    serve(store, host=host, port=port, artifacts=artifacts)
    click.echo("dashboard stopped")
    # as serve-storage: the server's thread (a daemon, possibly in the middle of a request)
    # must not keep the process alive; every note it wrote is committed
    sys.stdout.flush()
    os._exit(0)


@main.command(short_help="Audio files to the 57 GTZAN features (CSV).")
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
    The label is each file's parent folder, whatever it is (LIBRARY/<label>/<file>; GTZAN's
    genres_original/<genre>/<file> is one case)."""
    from gsearch.data.extract import extract_to_csv

    report = extract_to_csv(paths, out, segment_seconds=None if segment_seconds == "30" else 3.0, jobs=jobs)
    done = f"wrote {report.rows} rows from {report.files - len(report.failed)} file(s) to {out}"
    if report.failed:
        raise GsearchError(f"{len(report.failed)} of {report.files} file(s) skipped (listed above); "
                           + (done if report.rows else "nothing written"))
    click.echo(done)


@main.command(short_help="Classify audio files or feature CSVs.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by 'gsearch export-best'.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Show the K most likely genres [default: 1; with --json: all].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {file, genre, probabilities}.")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help="Run the model with onnxruntime (model.onnx; starts faster) or torch (model.pt).")
@user_errors
def predict(model_dir, files, top_k, as_json, backend) -> None:
    """Classify audio files (or folders) and feature CSVs (one result per row) with an exported
    model. Audio longer than two of the model's clips is classified in clip-long windows, averaged."""
    if sys.stderr.isatty():   # a new process: say what the first second or two is spent on
        click.echo(f"gsearch predict: loading the model and {len(files)} path(s) ...", err=True)
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


@main.command("serve", short_help="Serve an exported model over HTTP.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by 'gsearch export-best'.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the model to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port of the HTTP server.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes sharing the port (each loads the model).")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help="onnx: model.onnx through onnxruntime; torch: the weights-only model.pt.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50.0,
              show_default=True, help="Largest request body (audio upload or JSON rows).")
@click.option("--max-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Most feature rows in one POST /predict.")
@click.option("--max-audio-seconds", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Longest audio upload (read from its header, before decoding).")
@user_errors
def serve_command(model_dir, host, port, workers, backend, max_upload_mb, max_rows,
                  max_audio_seconds) -> None:
    """Serve an exported model over HTTP: /predict (feature rows), /predict/audio (an upload),
    /model, /health, and the Open Inference Protocol (KServe v2) under /v2; OpenAPI docs at /docs."""
    import importlib.util  # lazy: only serve checks for its packages

    # install_requires has them; say every one that is missing, in one line, before importing any
    needed = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
    missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise GsearchError(f"gsearch serve needs {', '.join(missing)}, not installed here; install "
                           "gsearch's pinned requirements, from its folder: pip install -r "
                           "requirements.txt .")
    try:
        from gsearch.serve import serve
    except ModuleNotFoundError as e:  # a package those need, missing or broken
        raise GsearchError(f"gsearch serve needs {e.name}, not installed here; install gsearch's "
                           "pinned requirements, from its folder: pip install -r requirements.txt .") from None
    serve(model_dir, host=host, port=port, workers=workers, backend=backend,
          max_upload_mb=max_upload_mb, max_rows=max_rows, max_audio_seconds=max_audio_seconds,
          echo=click.echo)


@main.command("serve-storage", short_help="Share a storage with workers (Optuna's gRPC proxy).")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 lets workers on other machines connect.")
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True,
              help="Port workers connect to (grpc://HOST:PORT).")
@user_errors
def serve_storage_command(storage, host, port) -> None:
    """Serve a storage to workers through Optuna's gRPC proxy (--storage grpc://HOST:PORT)."""
    check_url(storage)
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
