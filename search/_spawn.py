"""Starting worker processes: the multiprocessing context of a run's workers, and what they
inherit. Standard library only, so that the CLI starts the workers' server before it imports
torch and gsearch itself (the two imports then overlap)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal


@contextlib.contextmanager
def spawning():
    """What a worker inherits: an ignored SIGINT (a terminal's Ctrl-C reaches the parent,
    which forwards it once as SIGTERM, instead of interrupting workers mid-start) and no
    progress bar (tqdm reads TQDM_DISABLE when it is imported)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        del os.environ["TQDM_DISABLE"]
        signal.signal(signal.SIGINT, previous)


def start_workers_server():
    """The context workers start from. forkserver: they fork from a clean server process
    that imported torch and gsearch once (no CUDA state, no storage connection inherited);
    called early, its imports overlap with the parent's. spawn where there is no fork."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "gsearch.search.loop",
                                "gsearch.search.storage", "gsearch.search.parallel"])
    with spawning():
        forkserver.ensure_running()
    return ctx


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
