"""The export's confusion matrix drawn in a process of its own, for `gsearch run --export`.

After a short search, importing matplotlib and drawing confusion_matrix.png were a third of
the export's time (0.9 of 2.3 s), on the one core the command used. A PlotProcess, forked
once the command has its imports and before the data are read, imports matplotlib on a core
the search leaves idle; after the retraining it draws the plot while this process writes the
model files. The drawing is models.export.plot_confusion's, so the PNG is the same, byte for
byte; if the process is gone or failed, the plot is drawn here, as before.

Why a fork: the child starts with numpy and scikit-learn imported (a fresh interpreter spent
3.5 s of CPU importing them again on a busy machine, more than it saved), and it never runs
the caller's main script again, as a spawned one would. It touches neither torch nor the
storage (it is forked before the storage is opened and before CUDA is set up), as torch's
DataLoader workers are forked on Linux. Only on Linux; elsewhere the plot is drawn here. Why
not a thread: the imports hold the GIL, and a training loop that releases it at every torch
op waited on them, measured 2-3 times slower.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable

from gsearch.search._spawn import cpu_count

ANSWER_TIMEOUT = 120.0   # a drawing takes a second: after minutes, something is wrong there


def _serve(conn, parent_end) -> None:
    """In the plot process: the imports, then the one plot asked for. Any error ends it
    without an answer and without a word: the exporting process then draws the plot itself,
    and raises the error there if it is one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the exporting process's to handle
    parent_end.close()   # so that the exporting process's end closing reads as EOFError here
    try:   # plot_confusion's imports: most of its time
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        from sklearn.metrics import ConfusionMatrixDisplay  # noqa: F401

        from gsearch.models.export import plot_confusion

        report, path, title = conn.recv()   # EOFError: closed unused
        plot_confusion(report, Path(path), title)
    except Exception:
        return
    conn.send(True)


class PlotProcess:
    """The plot process, forked now. `draw` hands it the plot; `close` ends it."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, self._conn), name="gsearch-plot",
                                    daemon=True)
        with warnings.catch_warnings():   # Python 3.12+ counts the BLAS pool's idle threads
            warnings.filterwarnings(    # (OpenBLAS stops and restarts them around a fork)
                "ignore", r"This process .* is multi-threaded", DeprecationWarning)
            self._process.start()
        child.close()
        self._answered = False

    def draw(self, report: dict, path: Path, title: str) -> Callable[[], None]:
        """Start drawing models.export.plot_confusion(report, path, title) (path's folder must
        exist); returns the function that waits until the file is written, drawing it here
        if the process could not."""
        try:
            self._conn.send((report, str(path), title))
            sent = True
        except (OSError, ValueError):   # the process is gone, or closed
            sent = False

        def wait() -> None:
            try:
                self._answered = sent and self._conn.poll(ANSWER_TIMEOUT) and self._conn.recv() is True
            except (EOFError, OSError):
                pass
            finally:
                self.close()
            if not self._answered:
                from gsearch.models.export import plot_confusion

                plot_confusion(report, path, title)
        return wait

    def close(self) -> None:
        """End the process: at once if it has not answered (it may still be importing)."""
        self._conn.close()
        if self._answered:   # it is returning
            self._process.join(timeout=10.0)
        if self._process.is_alive():
            self._process.kill()
        self._process.join()


def start_plot_process(busy_cores: int) -> PlotProcess | None:
    """A PlotProcess where a core is left beside the search's `busy_cores` (torch threads times
    workers) and fork is at hand (Linux); else None (it would take its time from the search,
    or cannot start): the export then draws the plot itself, as before."""
    if cpu_count() <= busy_cores or sys.platform != "linux":
        return None
    try:
        return PlotProcess()
    except OSError:
        return None
