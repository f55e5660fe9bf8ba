"""`gsearch serve`: an exported model over HTTP (FastAPI app, run by uvicorn).

Routes
- GET  /health         {"status": "ok", "backend": ..., "audio_ready": bool}
- GET  /model          the export's model.json (classes, features, test accuracy, versions)
- POST /predict        JSON feature rows -> per row the genre, all probabilities and the top k
- POST /predict/audio  a multipart upload (field `file`) -> what `gsearch predict --json` prints
                       for one audio file
- GET  /docs           OpenAPI (Swagger UI); the schema is at /openapi.json

Every error is JSON {"error": "one line that says what to do"} with a 4xx status (5xx only for a
bug, whose traceback goes to the server log, never to the client). Request bodies are capped at
--max-upload-mb while they stream in; an upload is written to a temporary file that is removed
once it is classified. Audio feature extraction runs in worker threads, at most one per CPU at a
time, so the event loop (and /health) stays responsive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import python_multipart  # noqa: F401  (FastAPI's form parser: missing, the CLI says what to install)
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from gsearch import GsearchError, __version__
from gsearch.data.schema import SAMPLE_RATE
from gsearch.models.predict import ExportedModel, predict_audio


DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_TOP_K = 3
_SETTINGS_ENV = "GSEARCH_SERVE_SETTINGS"  # create_app's arguments for --workers processes
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")
_EXAMPLE = "{\"features\": [[57 numbers]]} or {\"rows\": [{\"tempo\": 120.0, ...}]}"


class RequestError(GsearchError):
    """A request the server cannot answer: a one-line message and its HTTP status."""

    def __init__(self, message: str, *, status: int = 422):
        super().__init__(message)
        self.status = status


# ---- request and response bodies (also the OpenAPI schema) ----------------------------------

class PredictRequest(BaseModel):
    """Feature rows: `features` (numbers in the order of GET /model "features") or `rows`
    (objects keyed by feature name); exactly one of the two."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
    features: list[list[float]] | None = Field(
        None, description="Rows of numbers in the model's feature order (GET /model).")
    rows: list[dict[str, float]] | None = Field(
        None, description="Rows as {feature name: value}; every feature of the model, no others.")
    top_k: int | None = Field(None, ge=1, description=f"Genres in each `top_k` list [default {DEFAULT_TOP_K}].")


class Ranked(BaseModel):
    genre: str
    probability: float


class RowPrediction(BaseModel):
    genre: str = Field(description="The most likely genre.")
    probabilities: dict[str, float] = Field(description="Every genre, most likely first.")
    top_k: list[Ranked]


class PredictResponse(BaseModel):
    predictions: list[RowPrediction]


class AudioPrediction(BaseModel):
    file: str = Field(description="The uploaded file's name.")
    genre: str
    probabilities: dict[str, float] = Field(description="Most likely first (the top_k first with ?top_k=).")
    windows: int = Field(description="Clip-long windows averaged (1: the audio was classified whole).")


class ErrorBody(BaseModel):
    error: str


_ERRORS = {status: {"model": ErrorBody} for status in (400, 413, 422)}


# ---- the app -------------------------------------------------------------------------------

def create_app(model_dir: str | os.PathLike, *, backend: str = "onnx",
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_rows: int = DEFAULT_MAX_ROWS,
               warm_audio: bool = True) -> FastAPI:
    """The FastAPI app serving the export in `model_dir`. Loads the model now, so a bad folder
    raises GsearchError here. `warm_audio` classifies a generated tone in the background at
    startup (the audio modules imported, scipy's filters and FFT plans set up), so the first
    upload does not pay for them."""
    if max_upload_mb <= 0 or max_rows < 1:
        raise GsearchError("--max-upload-mb must be positive and --max-rows at least 1")
    model = ExportedModel(model_dir, backend)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    audio_slots = asyncio.Semaphore(os.cpu_count() or 1)
    audio_ready = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_audio:
            threading.Thread(target=_warm_audio, args=(model, audio_ready), name="warm-audio",
                             daemon=True).start()
        yield

    app = FastAPI(title="gsearch model server", version=__version__, lifespan=lifespan,
                  description=f"Music-genre classifier ({len(model.classes)} genres, "
                              f"{len(model.features)} features) exported by gsearch. "
                              'Errors are JSON {"error": "..."}.')
    app.state.model = model
    app.add_middleware(BodyLimit, max_bytes=max_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            message = _too_large(max_bytes)
        elif exc.status_code == 404:
            message = f"no route {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc.errors())
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(GsearchError)
    async def user_error(request: Request, exc: GsearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 422))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer: uvicorn logs its traceback.
        return JSONResponse({"error": "internal server error; the server log has the details"},
                            status_code=500)

    @app.get("/health", summary="Liveness: the model is loaded and the server answers")
    async def health() -> dict:
        return {"status": "ok", "backend": model.backend, "audio_ready": audio_ready.is_set()}

    @app.get("/model", summary="The export's model.json: classes, features, test accuracy, versions")
    async def model_info() -> dict:
        return model.meta

    @app.post("/predict", summary="Classify feature rows", response_model=PredictResponse,
              responses=_ERRORS)
    def predict_rows(body: PredictRequest) -> JSONResponse:
        X = _feature_matrix(body, model.features, max_rows)
        top_k = min(body.top_k or DEFAULT_TOP_K, len(model.classes))
        P = model.predict_proba(X)
        return JSONResponse({"predictions": [_row_json(model.classes, p, top_k) for p in P]})

    @app.post("/predict/audio", summary="Classify an audio file (multipart field `file`)",
              response_model=AudioPrediction, responses=_ERRORS)
    async def predict_upload(
            file: UploadFile = File(description="An audio file: WAV, FLAC, OGG, MP3, AU, AIFF..."),
            top_k: int | None = Query(None, ge=1, description="Keep the K most likely genres "
                                                              "[default: all]")) -> JSONResponse:
        name = Path(file.filename or "upload").name
        async with audio_slots:  # the rest wait here without holding a thread
            prediction = await run_in_threadpool(_classify_upload, model, file.file, name)
        return JSONResponse(prediction.to_json(top_k))

    return app


class BodyLimit:
    """ASGI middleware capping request bodies at `max_bytes` while they stream in: a declared
    Content-Length over the cap is answered 413 before any byte is read; a body that streams
    past it (chunked, or longer than declared) stops being read with a 413."""

    def __init__(self, app, *, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = {"error": _too_large(self.max_bytes)}
            return await JSONResponse(message, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes an HTTPException on as it is
                    raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(max_bytes: int) -> str:
    return (f"request body over the {max_bytes / 2**20:g} MB limit (--max-upload-mb); "
            "send a smaller file or fewer rows")


def _warm_audio(model: ExportedModel, ready: threading.Event) -> None:
    """Classify a short generated tone once: imports the audio modules and sets them up."""
    try:
        import soundfile

        t = np.arange(3 * SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
        with tempfile.TemporaryDirectory(prefix="gsearch-warm-") as tmp:
            path = Path(tmp) / "warm.wav"
            soundfile.write(path, y.astype(np.float32), SAMPLE_RATE)
            predict_audio(model, path)
    except Exception as e:  # the first upload will load what it needs itself
        logging.getLogger("uvicorn.error").warning("audio warm-up failed (%s); the first upload "
                                                   "will be slower", e)
        return
    ready.set()


def _classify_upload(model: ExportedModel, upload, name: str):
    """Copy an upload to a temporary file (kept only while it is classified) and classify it.
    Runs in a worker thread. Error messages name the upload, not the temporary path."""
    suffix = Path(name).suffix
    suffix = suffix.lower() if _SAFE_SUFFIX.fullmatch(suffix) else ""
    upload.seek(0)
    with tempfile.NamedTemporaryFile(prefix="gsearch-upload-", suffix=suffix, delete=False) as tmp:
        shutil.copyfileobj(upload, tmp, 1 << 20)
    path = Path(tmp.name)
    try:
        return replace(predict_audio(model, path), file=name)
    except GsearchError as e:
        raise GsearchError(str(e).replace(str(path), name)) from None
    finally:
        path.unlink(missing_ok=True)


def _feature_matrix(body: PredictRequest, features: tuple[str, ...], max_rows: int) -> np.ndarray:
    """The request's rows as float32 [N, n_features] in the model's order; GsearchError otherwise."""
    if (body.features is None) == (body.rows is None):
        raise GsearchError(f"send exactly one of 'features' and 'rows': {_EXAMPLE}")
    rows = body.features if body.features is not None else body.rows
    kind = "features" if body.features is not None else "rows"
    if not rows:
        raise GsearchError(f"'{kind}' is empty; send at least one row")
    if len(rows) > max_rows:
        raise RequestError(f"{len(rows)} rows is more than the {max_rows} allowed (--max-rows); "
                           "split the request", status=413)
    n = len(features)
    if body.features is not None:
        for i, row in enumerate(body.features):
            if len(row) != n:
                raise GsearchError(f"features[{i}] has {len(row)} numbers; the model takes {n}, "
                                   "in the order of GET /model \"features\"")
        return np.array(body.features, dtype=np.float32)
    known = set(features)
    for i, row in enumerate(body.rows):
        unknown = [k for k in row if k not in known]
        if unknown:
            raise GsearchError(f"rows[{i}]: unknown feature {unknown[0]!r}; the model's features "
                               "are listed by GET /model")
        missing = [k for k in features if k not in row]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise GsearchError(f"rows[{i}]: missing feature {missing[0]!r}{more}; every row needs "
                               f"all {n} features of GET /model")
    return np.array([[row[k] for k in features] for row in body.rows], dtype=np.float32)


def _row_json(classes: tuple[str, ...], p: np.ndarray, top_k: int) -> dict:
    order = np.argsort(-p, kind="stable")
    ranked = [(classes[i], float(p[i])) for i in order]
    return {"genre": ranked[0][0], "probabilities": dict(ranked),
            "top_k": [{"genre": g, "probability": v} for g, v in ranked[:top_k]]}


def _validation_message(errors) -> tuple[int, str]:
    """(status, one line) for FastAPI's validation errors: the first error, where it is."""
    if not errors:
        return 422, "invalid request; see /docs"
    first = errors[0]
    kind, loc = first.get("type", ""), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        return 400, f"malformed JSON ({reason}); send {_EXAMPLE}"
    if loc == ("body",) and kind == "missing":
        return 400, f"empty body; send {_EXAMPLE}"
    if loc[:2] == ("body", "file") and kind == "missing":
        return 400, ("no file; upload the audio as multipart/form-data field 'file' "
                     "(curl -F file=@song.wav ...)")
    if loc == ("body",):
        return 422, f"the body must be a JSON object: {_EXAMPLE}"
    if kind == "extra_forbidden" and len(loc) == 2:
        return 422, f"unknown field {loc[1]!r}; send {_EXAMPLE}"
    where = loc[0] if loc and loc[0] in ("query", "path") else None
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path") else [str(p) for p in loc]
    text = "".join(f"[{p}]" if p.isdigit() else (f".{p}" if i else p) for i, p in enumerate(parts))
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    label = f"{where} parameter {text}" if where else (text or "body")
    return 422, f"{label}: {message}{more}"


# ---- running it ----------------------------------------------------------------------------

def app_from_environment() -> FastAPI:
    """uvicorn's factory in each --workers process: create_app with the parent's settings."""
    settings = json.loads(os.environ[_SETTINGS_ENV])
    return create_app(settings.pop("model_dir"), **settings)


def _check_port(host: str, port: int) -> None:
    """Fail with one line now if host:port cannot be bound (taken, or not an address here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise GsearchError(f"cannot serve on {host}:{port} ({reason}); "
                           "choose another --port") from None


def serve(model_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, backend: str = "onnx", max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          max_rows: int = DEFAULT_MAX_ROWS, echo: Callable[[str], None] = print) -> None:
    """Serve the export in `model_dir` until Ctrl-C or SIGTERM. The model is loaded and the port
    bound before anything is served, so a bad folder or a taken port fails at once."""
    import uvicorn

    settings = {"model_dir": str(model_dir), "backend": backend, "max_upload_mb": max_upload_mb,
                "max_rows": max_rows}
    app = create_app(**settings)  # a bad folder fails here, before binding
    model = app.state.model
    _check_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    echo(f"serving {model_dir} ({len(model.classes)} genres, {backend}) at http://{shown}:{port}/ "
         f"(docs: /docs; Ctrl-C stops)")
    # Ctrl-C and SIGTERM stop the server, also when it was started with SIGINT ignored (a
    # shell's `&`, a CI runner): uvicorn shuts down gracefully, then re-raises the signal here.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        if workers == 1:
            uvicorn.run(app, host=host, port=port, log_level="info")
        else:  # each process builds its own app from the same settings
            os.environ[_SETTINGS_ENV] = json.dumps(settings)
            uvicorn.run("gsearch.search.serve:app_from_environment", factory=True, host=host,
                        port=port, workers=workers, log_level="info")
    except KeyboardInterrupt:
        pass
    echo("server stopped")
