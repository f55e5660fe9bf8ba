"""`gsearch run`: its options -> one RunRequest -> search.runner.run_study; what it prints."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from gsearch import GsearchError
from gsearch.cli._common import (table_options, check, device_option, ensemble_option, lazy,
                                 level_option, pruner_option, sampler_option, space_option, storage_option,
                                 study_option, threads_option, user_errors)
from gsearch.cli.export import print_export
from gsearch.data.schema import ARTIST_FOLDS
from gsearch.search._spawn import start_workers_server, worker_cap
from gsearch.search.protocol import Protocol
from gsearch.search.requests import RunRequest, study_options
from gsearch.search.space import PARAMETERS, TABLE_PARAMETERS, resolve_space
from gsearch.search.study import DEFAULT_POPULATION, WARM_START_TRIALS, default_study

OBJECTIVES_HELP = ("What the study optimizes: accuracy (validation accuracy), accuracy,params "
                   "(also fewest trainable parameters) or accuracy,latency (also fastest: median "
                   "CPU milliseconds of a single-row forward pass of the trained model, 100 calls "
                   "after 20 warm-up calls, at --threads; noisy: on a busy 2-core machine repeated "
                   "measurements varied by 3% for small models, up to 2x for large ones). "
                   "Trials are pruned on accuracy either way. Recorded in the study.")


@click.command(short_help="Search: run a study, or add trials to it.")
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
@click.option("--seed", type=int, default=None,
              help="Seeds the sampler, so that a study is reproducible on one machine. Training "
                   "is always seeded: with this seed (0 without it) plus the trial's number.")
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
@table_options
@click.option("--test-fold", type=click.IntRange(min(ARTIST_FOLDS), max(ARTIST_FOLDS)), default=None,
              help="With --groups artist: test on this fold of GTZAN's published artist-filtered "
                   "3-fold split (1, 2 or 3) instead of a --test-size holdout.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A deadline in seconds from the command's start: no trial starts after it, "
                   "and trials still training stop at the next batch once they have finished an epoch "
                   "(pruned, reason 'deadline', their curves kept).")
@click.option("--export", "export_dir", type=click.Path(path_type=Path), default=None,
              metavar="DIR",
              help="After the search, export the best trials to DIR in this process, as "
                   "'gsearch export-best --out DIR' does (top 5 by default; knee on a study with "
                   "several objectives): a model from one command. --timeout bounds the search; "
                   "the export follows it (a few seconds). DIR is checked before the search: a "
                   "new or empty folder, or an export of the same study.")
@click.option("--force", is_flag=True,
              help="With --export: replace an export of another study in DIR (never a folder "
                   "holding other files).")
@ensemble_option
@level_option
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
                   f"epochs=30 (repeatable). NAME: {', '.join(PARAMETERS)}; for a table of your "
                   f"own also {', '.join(TABLE_PARAMETERS)} (class_weight: imbalanced classes; "
                   "loss: a regression).")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LOW:HIGH",
              help="Narrow or widen a range of the built-in search space, e.g. --range width=16:64 "
                   "or --range lr=1e-3:1e-1 (repeatable; NAME=A,B,C for a categorical parameter's "
                   "choices, e.g. --range lr_schedule=constant,cosine; batch_size=16:256 means the "
                   "powers of two between). Checked as --fix is; recorded in the study: resumes, "
                   "workers and the export use it.")
@space_option
@click.option("--population", type=click.IntRange(min=1), default=DEFAULT_POPULATION,
              show_default=True,
              help="Trials trained at once as one batched model; 1 trains them one by one.")
@click.option("--warm-start", metavar="STUDY", default=None,
              help=f"Start from an earlier study: its {WARM_START_TRIALS} best configurations are "
                   "the first trials of this run (each once per study).")
@click.option("--warm-start-storage", metavar="URL", default=None,
              help="Storage of the --warm-start study [default: --storage].")
@click.option("--objectives", default="accuracy", show_default=True, help=OBJECTIVES_HELP)
@click.option("--max-params", type=click.IntRange(min=1), default=None,
              help="Limit: trials with more trainable parameters are kept but marked infeasible "
                   "and never exported by a rule. Recorded in the study.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Limit on the latency (measured as for --objectives accuracy,latency); "
                   "slower trials are kept but marked infeasible. Recorded in the study.")
@click.option("--mlflow", metavar="URI", default=None,
              help="Log every finished trial to MLflow at this tracking URI (sqlite:///mlflow.db, "
                   "http://HOST:5000, or a folder ./mlruns): one run per trial with its parameters "
                   "and values, in the experiment named after the study. Needs the [mlflow] extra.")
@click.option("-v", "--verbose", is_flag=True, help="Log every trial (Optuna's log) and show "
                                                      "tracebacks of worker errors.")
@user_errors
def run(data_path, split_seed, test_size, val_size, cv, groups, group, test_fold, export_dir,
        study_name, **options) -> None:
    """Run a study, or resume it with --trials more trials."""
    started = time.monotonic()   # --timeout counts from here
    protocol = Protocol(test_size=test_size, val_size=val_size, split_seed=split_seed, cv=cv,
                        groups=groups, test_fold=test_fold, group=group)
    study_name = study_name or default_study(data_path)
    request = check(RunRequest(data=data_path, protocol=protocol, export=export_dir,
                               study=study_name, drop=tuple(options.pop("drop")),
                               fix=tuple(options.pop("fix")), ranges=tuple(options.pop("ranges")),
                               categorical=tuple(options.pop("categorical")), **options))
    if request.space is not None:   # a bad --space fails now; its folder is on the workers' path
        resolve_space(request.space)
    workers, lowered = worker_cap(request.workers, request.trials)
    if lowered:
        click.echo(f"note: {lowered}", err=True)
    if sys.stderr.isatty():   # the imports and the data take a few seconds: say so at once
        click.echo("gsearch run: loading PyTorch, Optuna and the data ...", err=True)
    if workers > 1:
        start_workers_server()  # its imports run while this process imports its own
    ds = request.load()   # the table's errors before torch and Optuna load
    outcome = lazy("gsearch.search.runner").run_study(request, echo=click.echo, started=started,
                                                      ds=ds)
    where = study_options(request.study, request.storage)
    if outcome.published is not None:
        print_export(outcome.published, request.export)
        return
    if outcome.exportable:
        if not outcome.completed:
            click.echo("note: no trial completed before the deadline; export-best makes a model of "
                       "the trials it stopped (a longer --timeout gives complete ones)")
        click.echo(f"next: gsearch export-best {where}")
        return
    again = (f"run again with a longer --timeout (the study resumes), e.g. gsearch run {where} "
             f"--timeout {max(60, 3 * int(request.timeout or 20))}")
    if request.export is not None:
        raise GsearchError(f"no trial has trained an epoch yet, so nothing was exported to "
                           f"{request.export}: {again} --export {request.export}")
    click.echo(f"no trial has trained an epoch yet, so there is nothing to export: {again}; or "
               f"remove the study: gsearch studies --delete {request.study}"
               + where.removeprefix(f"--study {request.study}"))
