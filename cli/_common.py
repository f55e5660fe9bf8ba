"""What the commands share: their common options, the one way a command fails (one line on
stderr, a non-zero exit), and the one lazy import.

A command module imports at its top only what its options need (defaults and choices, from
modules that load nothing heavy); the library a command calls is imported with `lazy` when
the command runs, so that `gsearch --help`, a mistyped option or a bad path answer in a few
hundredths of a second instead of after torch, Optuna and pandas load (about 2 s), and each
command loads only its own (predict never imports Optuna).
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import click

from gsearch import GsearchError, Interrupted
from gsearch.data.files import MAX_DATA_ENV, MAX_DATA_MB
from gsearch.data.schema import REGRESSION_MIN_VALUES, TASKS
from gsearch.models.validation import METRICS
from gsearch.search.protocol import Protocol
from gsearch.search.requests import DEVICES
from gsearch.search.storage import DEFAULT_STORAGE, STORAGE_ENV, StorageError, safe_url
from gsearch.search.study import DEFAULT_PRUNER, DEFAULT_STUDY, PRUNERS, SAMPLERS


def lazy(module: str):
    """`module`, imported now: the one place a command loads the library it calls (see above)."""
    return importlib.import_module(module)


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


def check(request):
    """`request` after its checks that need no heavy import (requests.*.check)."""
    request.check()
    return request


storage_option = click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
                              envvar=STORAGE_ENV, show_envvar=True,
                              help="Optuna storage: sqlite:///file.db, postgresql://USER@HOST/DB, "
                                   "mysql://USER@HOST/DB, redis://HOST:6379/0, grpc://HOST:PORT "
                                   "or a journal file NAME.log.")
study_option = click.option(
    "--study", "study_name", default=None,
    help=f"Study name [default: the storage's only study, else {DEFAULT_STUDY}].")


def comma_list(ctx, param, values) -> tuple[str, ...]:
    """A repeatable option that also takes a comma-separated list: --drop a,b --drop c."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())
device_option = click.option("--device", type=click.Choice(DEVICES), default="auto",
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
    "--drop", multiple=True, metavar="COLUMN", callback=comma_list,
    help="A column of the table to leave out of the features (repeatable, or COLUMN,COLUMN), "
         "e.g. an id. Without it every column but the label, filename and length is a feature; "
         "a table with the Kaggle GTZAN features uses exactly those 57.")
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
task_option = click.option(
    "--task", type=click.Choice(TASKS), default="auto", show_default=True,
    help="classification (the label names classes), regression (the label is a number to "
         "predict), or auto: regression for a label of numbers with more than "
         f"{REGRESSION_MIN_VALUES} distinct values. Recorded in the study.")
metric_option = click.option(
    "--metric", type=click.Choice(list(METRICS)), default=None,
    help="What the search optimizes, prunes on and ranks by, and the export reports first: "
         "accuracy, balanced_accuracy, macro_f1, log_loss, roc_auc (two classes) for a "
         "classification; rmse, mae, r2 for a regression [default: accuracy, or rmse]. "
         "Recorded in the study.")
categorical_option = click.option(
    "--categorical", multiple=True, metavar="COLUMN", callback=comma_list,
    help="Read this column's values as categories (repeatable), e.g. an integer code; a column "
         "with text is read as categories without it.")
sep_option = click.option(
    "--sep", metavar="CHAR", default=None,
    help="The table's column separator, e.g. ';' or '\\t' for a tab [default: sniffed from the "
         "header line: a comma, else a semicolon, a tab or a bar].", callback=lambda c, p, v: (
        None if v is None else {"\\t": "\t", "tab": "\t"}.get(v, v)))
max_data_option = click.option(
    "--max-data-mb", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MB",
    help="The most megabytes of CSV a table may hold (a gzipped one: once gunzipped, checked "
         "while it inflates); a larger one is refused at once. Reading takes about 15-30 MB of "
         f"memory per MB of CSV [default: {MAX_DATA_MB}, or ${MAX_DATA_ENV}].")
missing_option = click.option(
    "--missing", metavar="WORDS", default=None,
    help="The words that mean an empty cell, in features and label, besides an empty cell "
         "(a comma list, any case): --missing '' reads NA, None and the others as values (a "
         "class 'NA'), --missing NA,? only those [default: NA, N/A, null, None, nan]. "
         "Recorded in the study.")
level_option = click.option(
    "--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9,
    show_default=True,
    help="Calibrate the exported model on the validation rows: a classifier's probabilities "
         "(temperature scaling) and conformal prediction sets, or a regression's intervals, "
         "that hold the true value this often; the export reports their coverage on the test rows.")
space_option = click.option(
    "--space", metavar="MODULE:FUNCTION", default=None,
    help="A search space of your own: a Python function that takes an Optuna trial and returns "
         "a gsearch.models.TrialConfig, e.g. --space myspace:space for space() in myspace.py in "
         "the current folder [default: the built-in space, sized to the table]. Recorded in the "
         "study: resumes and workers use it.")


def table_options(command):
    """The options that say how a table is read and split, as run and evaluate take them:
    --cv, --label, --drop, --categorical, --sep, --missing, --max-data-mb, --task, --metric,
    --groups, --group."""
    for option in reversed((cv_option, label_option, drop_option, categorical_option, sep_option,
                            missing_option, max_data_option, task_option, metric_option,
                            groups_option, group_option)):
        command = option(command)
    return command
