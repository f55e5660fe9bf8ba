"""`gsearch evaluate`: its options -> one EvaluateRequest -> search.evaluate.evaluate."""

from __future__ import annotations

from pathlib import Path

import click

from gsearch import GsearchError
from gsearch.cli._common import (table_options, check, device_option, ensemble_option, lazy,
                                 pruner_option, sampler_option, space_option,
                                 threads_option, user_errors)
from gsearch.search.protocol import Protocol
from gsearch.search.requests import EvaluateRequest, check_test_folds, parse_integers


@click.command("evaluate", short_help="Benchmark the search over several test splits.")
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
@table_options
@click.option("--test-folds", default=None, metavar="K,K,...",
              help="With --groups artist: the published artist folds to test on, each with its "
                   "own study (instead of --split-seeds) [default: 1,2,3].")
@ensemble_option
@sampler_option
@pruner_option
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler and training seed.")
@space_option
@device_option
@threads_option
@click.pass_context
@user_errors
def evaluate(ctx, split_seeds, data_path, out_dir, cv, groups, group, test_folds, drop, categorical,
             **options) -> None:
    """Honest benchmark: per split seed (or, with --groups artist, per published artist fold),
    search train+validation, export, score on test."""
    seeds = parse_integers(split_seeds, "--split-seeds", "42,0,1")
    folds = None
    if groups == "artist":
        if ctx.get_parameter_source("split_seeds") != click.core.ParameterSource.DEFAULT:
            raise GsearchError("--groups artist tests on GTZAN's published artist folds; pass "
                               "--test-folds (e.g. 1,2,3) instead of --split-seeds")
        text = test_folds or "1,2,3"
        folds = tuple(int(f) for f in text.split(",") if f.strip().isdigit())
        if len(folds) != len([f for f in text.split(",") if f.strip()]):
            check_test_folds((), text)   # not all of them whole numbers: says which it takes
        check_test_folds(folds, text)
    elif test_folds is not None:
        raise GsearchError("--test-folds picks GTZAN's published artist folds; add --groups "
                           "artist, or use --split-seeds")
    request = check(EvaluateRequest(split_seeds=seeds, test_folds=folds, data=data_path,
                                    protocol=Protocol(cv=cv, groups=groups, group=group),
                                    out=out_dir, drop=tuple(drop), categorical=tuple(categorical),
                                    **options))
    evaluation = lazy("gsearch.search.evaluate")
    done = evaluation.evaluate(request)
    click.echo(evaluation.format_table(done.results))
    click.echo(f"data: {done.data}")
    click.echo(f"models in {done.folders}; studies in {done.storage}")
