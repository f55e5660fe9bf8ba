"""`gsearch studies`, `gsearch dashboard` and `gsearch serve-storage`: what a storage holds, and
serving it to a browser or to workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gsearch.cli._common import artifacts_option, lazy, storage_option, user_errors
from gsearch.search.storage import check_url, safe_url
from gsearch.search.study import delete_study, set_log_level, study_summaries

COLUMNS = ("complete", "pruned", "failed", "running", "interrupted")


def _printable(name: str) -> str:
    """A study name for a terminal table: control characters (newline, ESC...) as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _open(storage: str):
    """The storage at `storage`, which must exist; Optuna's log at warnings only."""
    set_log_level()
    return lazy("gsearch.search.storage.opening").open_storage(storage, must_exist=True)


@click.command(short_help="List the studies in a storage, or delete one.")
@storage_option
@click.option("--delete", "delete_name", metavar="NAME", default=None,
              help="Delete the study NAME and all its trials from the storage (for example one "
                   "that a too-short --timeout left without a completed trial). A study that a "
                   "run is searching is refused, unless --force.")
@click.option("--force", is_flag=True,
              help="With --delete: delete the study even while a run is searching it (that "
                   "run then stops).")
@user_errors
def studies(storage, delete_name, force) -> None:
    """List the studies in a storage with their trial counts, best validation accuracy and,
    for a study with several objectives, the number of trials on its Pareto front."""
    check_url(storage, must_exist=True)
    if force and delete_name is None:
        raise click.UsageError("--force goes with --delete NAME")
    store = _open(storage)
    if delete_name is not None:
        n_trials = delete_study(store, delete_name, safe_url(storage), force=force)
        click.echo(f"deleted study '{_printable(delete_name)}' ({n_trials} trials) from "
                   f"{safe_url(storage)}")
        return
    summaries = study_summaries(store)
    if not summaries:
        click.echo(f"no studies in {safe_url(storage)}")
        return
    click.echo(f"{'study':<24} {'trials':>6} " + " ".join(f"{c:>8}" for c in COLUMNS)
               + f" {'pareto':>6}  best")
    for s in summaries:
        counts = (s.complete, s.pruned, s.failed, s.running, s.interrupted)
        front = "-" if s.pareto is None else str(s.pareto)
        best = "-" if s.best is None else f"{s.best:.4f}"
        click.echo(f"{_printable(s.name):<24} {s.trials:>6} " + " ".join(f"{n:>8}" for n in counts)
                   + f" {front:>6}  {best}")


@click.command(short_help="Browse a study in optuna-dashboard.")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the dashboard to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Port of the dashboard's web page.")
@artifacts_option
@user_errors
def dashboard(storage, host, port, artifacts: Path | None) -> None:
    """Serve optuna-dashboard for a storage."""
    check_url(storage, must_exist=True)
    store = _open(storage)
    board = lazy("gsearch.search.dashboard")
    artifacts = board.artifact_dir(artifacts, storage)
    click.echo(f"optuna-dashboard for {safe_url(storage)} at http://{host}:{port}/ "
               f"(artifacts: {artifacts or 'none, pass --artifacts DIR'}; Ctrl-C stops)")
    board.serve(store, host=host, port=port, artifacts=artifacts)
    click.echo("dashboard stopped")
    # as serve-storage: the server's thread (a daemon, possibly in the middle of a request)
    # must not keep the process alive; every note it wrote is committed
    sys.stdout.flush()
    os._exit(0)


@click.command("serve-storage", short_help="Share a storage with workers (Optuna's gRPC proxy).")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 lets workers on other machines connect.")
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True,
              help="Port workers connect to (grpc://HOST:PORT).")
@user_errors
def serve_storage(storage, host, port) -> None:
    """Serve a storage to workers through Optuna's gRPC proxy (--storage grpc://HOST:PORT)."""
    check_url(storage)
    set_log_level()
    lazy("gsearch.search.storage.opening").serve_storage(storage, host=host, port=port, ready=lambda: click.echo(
        f"storage proxy for {safe_url(storage)} at grpc://{host}:{port} (Ctrl-C stops; "
        "workers: gsearch run --storage grpc://HOST:PORT)"))
    click.echo("storage proxy stopped")
    # gRPC's executor threads are joined at interpreter exit; one stuck in a cancelled call
    # would keep a stopped proxy alive (seen once under load), so leave at once: every
    # storage write the proxy made is already committed.
    sys.stdout.flush()
    os._exit(0)
