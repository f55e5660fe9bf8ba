"""`gsearch serve`'s process: the app served by uvicorn until Ctrl-C or SIGTERM, in one process or
in --workers processes sharing the port. Each worker builds its own app from the settings it is
handed (pickled by multiprocessing, as uvicorn's supervisor starts its workers): nothing goes
through the environment."""

from __future__ import annotations

import logging
import os
import signal
import sys
from functools import partial
from typing import Callable

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from gsearch import GsearchError
from gsearch._ports import check_port
from gsearch.data.audio import DEFAULT_MAX_AUDIO_SECONDS
from gsearch.serve.app import (DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_ROWS, DEFAULT_MAX_UPLOAD_MB,
                               create_app)
from gsearch.serve.requests import DEFAULT_MAX_VALUES


def worker_app(model_dir: str, **settings) -> FastAPI:
    """uvicorn's app factory in each --workers process. A folder that fails here (changed since
    the parent loaded it) stops the server (uvicorn's supervisor gives up on a worker that exits
    with STARTUP_FAILURE) instead of starting the worker again and again."""
    try:
        return create_app(model_dir, **settings)
    except GsearchError as e:
        logging.getLogger("uvicorn.error").error("%s", e)
        sys.exit(STARTUP_FAILURE)


def serve(model_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, backend: str = "onnx", max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          max_rows: int = DEFAULT_MAX_ROWS, max_values: int = DEFAULT_MAX_VALUES,
          max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
          body_timeout: float = DEFAULT_BODY_TIMEOUT_S, echo: Callable[[str], None] = print) -> None:
    """Serve the export in `model_dir` until Ctrl-C or SIGTERM. The model is loaded and the port
    checked before anything is served, so a bad folder or a taken port fails at once."""
    settings = {"backend": backend, "max_upload_mb": max_upload_mb, "max_rows": max_rows,
                "max_values": max_values, "max_audio_seconds": max_audio_seconds,
                "body_timeout": body_timeout}
    app = create_app(model_dir, **settings)  # a bad folder fails here, before binding
    model = app.state.serve.model
    check_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    what = "a regression" if model.regression else f"{len(model.classes)} genres"
    echo(f"serving {model_dir} ({what}, {backend}) at http://{shown}:{port}/ "
         f"(docs: /docs; Ctrl-C stops)")
    # Ctrl-C and SIGTERM stop the server, also when it was started with SIGINT ignored (a
    # shell's `&`, a CI runner): uvicorn shuts down gracefully, then re-raises the signal here.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        if workers == 1:
            uvicorn.run(app, host=host, port=port, log_level="info")
        else:
            _run_workers(partial(worker_app, str(model_dir), **settings), host, port, workers)
    except KeyboardInterrupt:
        pass
    echo("server stopped")


def _run_workers(factory: Callable[[], FastAPI], host: str, port: int, workers: int) -> None:
    """What uvicorn.run does for --workers, with an app factory instead of an import string: its
    supervisor binds the port, starts the workers (each calls `factory`), keeps them alive, and
    on SIGINT or SIGTERM stops them and returns."""
    config = uvicorn.Config(factory, factory=True, host=host, port=port, workers=workers,
                            log_level="info")
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise GsearchError("a --workers process failed to start; the log above says why")
