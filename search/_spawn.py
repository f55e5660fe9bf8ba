"""Starting worker processes: the multiprocessing context of a run's workers, and what they
inherit. Standard library only, so that the CLI starts the workers' server before it imports
torch and gsearch itself (the two imports then overlap)."""

from __future__ import annotations

import contextlib
import os
import signal


@contextlib.contextmanager
def spawning():
    """What a worker inherits: an ignored SIGINT (a terminal's Ctrl-C reaches the parent,
    which forwards it once as SIGTERM, instead of interrupting workers mid-start). A worker
    shows nothing (the parent shows the progress)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_workers_server():
    """The context workers start from. forkserver: they fork from a clean server process
    that imported torch and gsearch once (no CUDA state, no storage connection inherited);
    called early, its imports overlap with the parent's. spawn where there is no fork."""
    # here, not at the top: multiprocessing costs `gsearch --help` a sixth of its start-up
    import multiprocessing as mp
    from multiprocessing import forkserver
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "gsearch.search.loop",
                                "gsearch.search.storage", "gsearch.search.worker",
                                "gsearch.search.parallel"])
    with spawning():
        forkserver.ensure_running()
    return ctx


# Worker processes per core at most: more only fight over the cores (1000 workers on 2 cores
# took a minute to start for 4 trials of 6 s).
WORKERS_PER_CORE = 4


def worker_cap(requested: int, trials: int) -> tuple[int, str | None]:
    """The worker processes a run of `trials` trials starts when `requested` are asked for:
    never more than the trials (one without a trial only costs its start), nor more than
    WORKERS_PER_CORE per core; and the note that says so when the cores lowered it.

    >>> worker_cap(8, 3)
    (3, None)
    """
    workers = min(requested, trials)
    most = WORKERS_PER_CORE * cpu_count()
    if workers <= most:
        return workers, None
    return most, (f"--workers {workers} lowered to {most}, {WORKERS_PER_CORE} per core "
                  f"({cpu_count()} here): more only fight over the cores")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
