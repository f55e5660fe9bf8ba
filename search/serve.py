"""`gsearch serve`: an exported model over HTTP (FastAPI app, run by uvicorn).

Routes
- GET  /health         {"status": "ok", "backend": ..., "audio_ready": bool}
- GET  /model          the export's model.json (classes, features, test accuracy, versions)
- POST /predict        JSON feature rows -> per row the genre, all probabilities and the top k
- POST /predict/audio  a multipart upload (field `file`) -> what `gsearch predict --json` prints
                       for one audio file
- GET  /docs           OpenAPI (Swagger UI); the schema is at /openapi.json
- the Open Inference Protocol (KServe v2, also spoken by Triton), model name "gsearch":
  GET /v2, /v2/health/live, /v2/health/ready, /v2/models/gsearch, /v2/models/gsearch/ready;
  POST /v2/models/gsearch/infer: tensor "features" FP32 [N, n_features] -> "probabilities" FP32
  [N, n_classes] and "label" BYTES [N]. JSON tensors only (no binary_data extension).

Every error is JSON {"error": "one line that says what to do"} with a 4xx status, or 503 with
Retry-After when too many heavy requests wait (5xx otherwise only for a bug, whose traceback goes
to the server log, never to the client). Request bodies are capped at --max-upload-mb while they
stream in; an upload is written to a temporary file that is removed once it is classified.

Heavy work never runs on the event loop, so /health keeps answering, and is bounded so that the
server's memory is:
- a JSON body waits, unread, until the rows it may hold fit in a budget of --max-rows per CPU
  (from its Content-Length: a row takes at least 2 bytes per feature; at most --max-rows, so at
  most one big body per CPU is in memory; one that can hold at most _SMALL_ROWS rows goes
  straight through). It is parsed in a worker thread, after a numpy scan of
  its bytes has bounded its nesting (_MAX_DEPTH), its arrays and objects (--max-rows, each row is
  one) and its values, so an oversized body is refused (413) before a Python object is built for
  each of its values;
- an upload's header is checked first (duration, sample rate, samples to decode:
  data.audio.check_audio_header), then it waits until its samples fit in _DECODE_BUDGET (the
  most one upload may have; each takes at least a CPU's share), and is decoded and classified in
  a worker thread;
- at most _MAX_WAITING requests wait for either; one more is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
import pydantic
import python_multipart  # noqa: F401  (FastAPI's form parser: missing, the CLI says what to install)
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from gsearch import GsearchError, __version__
from gsearch._ports import check_port
from gsearch.data.audio import DEFAULT_MAX_AUDIO_SECONDS, AudioLimitError, check_audio_header
from gsearch.data.schema import SAMPLE_RATE
from gsearch.models.predict import ExportedModel, predict_audio


DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_TOP_K = 3
_MAX_DEPTH = 32       # JSON nesting refused beyond this (a request needs 4; parameters some more)
_SLACK = 64           # arrays/objects a body may hold beside its rows (inputs, outputs, parameters)
_SMALL_ROWS = 64      # JSON bodies that can hold at most this many rows go straight through
_MAX_WAITING = 64     # heavy requests waiting for a slot, per process; beyond, 503 and Retry-After
_RETRY_AFTER_S = 2    # the Retry-After of that 503
_DECODE_BUDGET = 600 * 48_000 * 2  # samples decoded at once, all uploads together: the most one
                                   # upload may hold (data.audio: 10 min of 48 kHz stereo)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest value the model computes with
_SETTINGS_ENV = "GSEARCH_SERVE_SETTINGS"  # create_app's arguments for --workers processes
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")
_EXAMPLE = "{\"features\": [[57 numbers]]} or {\"rows\": [{\"tempo\": 120.0, ...}]}"
V2_MODEL = "gsearch"  # the model's name in the Open Inference Protocol routes (/v2/models/gsearch)
_V2_EXAMPLE = ('{"inputs": [{"name": "features", "datatype": "FP32", "shape": [N, 57], '
               '"data": [N*57 numbers, row after row]}]}')
_V2_FLOATS = {"FP32": np.float32, "FP64": np.float64}  # input datatypes taken (cast to FP32)
_BINARY = ("binary tensor data (the binary_data extension) is not supported; send \"data\" as JSON "
           "numbers (tritonclient: set_data_from_numpy(..., binary_data=False))")


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A JSON integer: 3, and also 3.0 (the same number in JSON and in JSON Schema's "integer")
WholeNumber = Annotated[int, pydantic.BeforeValidator(_whole)]


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, None elsewhere (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def _give_back_memory() -> None:
    """Hand the heap memory freed by a heavy request back to the system. glibc's malloc keeps
    what a thread freed in that thread's arena, and the server's worker threads are many: without
    this, the RSS left after big requests adds up, request after request."""
    if _TRIM is not None:
        _TRIM(0)


class RequestError(GsearchError):
    """A request the server cannot answer: a one-line message and its HTTP status."""

    def __init__(self, message: str, *, status: int = 422, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


# ---- request and response bodies (also the OpenAPI schema) ----------------------------------

class PredictRequest(BaseModel):
    """Feature rows: `features` (numbers in the order of GET /model "features") or `rows`
    (objects keyed by feature name); exactly one of the two."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
    features: list[list[float]] | None = Field(
        None, description="Rows of numbers in the model's feature order (GET /model).")
    rows: list[dict[str, float]] | None = Field(
        None, description="Rows as {feature name: value}; every feature of the model, no others.")
    top_k: WholeNumber | None = Field(None, ge=1, description=f"Genres in each `top_k` list [default {DEFAULT_TOP_K}].")


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


_BUSY = {503: {"model": ErrorBody, "description": "Too many heavy requests waiting; retry after "
                                                   "Retry-After seconds",
               "headers": {"Retry-After": {"description": "Seconds to wait before retrying.",
                                           "schema": {"type": "integer"}}}}}
_ERRORS = {**{status: {"model": ErrorBody} for status in (400, 413, 422)}, **_BUSY}
_JSON_ERRORS = {**_ERRORS, 415: {"model": ErrorBody}}  # a JSON body sent as a form or text


# ---- the Open Inference Protocol (KServe v2) bodies ------------------------------------------

class V2Error(RequestError):
    """A bad Open Inference Protocol request: 400 unless said otherwise (404, 413)."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message, status=status)


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions supported: none.")


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the number of rows).")


class V2ModelMetadata(BaseModel):
    name: str
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


def _scalar(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    raise ValueError("a parameter is a string, a number or true/false")


V2Parameters = dict[str, Annotated[Any, pydantic.AfterValidator(_scalar)]]  # the protocol's $parameters


class V2InferInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str = Field(description='"features", the only input.')
    shape: list[WholeNumber] = Field(description="[N, n_features]: N rows.")
    datatype: str = Field(description="FP32 (FP64 is taken too and cast to FP32).")
    parameters: V2Parameters | None = None
    data: list[Any] = Field(description="N * n_features finite numbers, row after row: flat "
                                        "(row-major) or nested as [[...], ...].")


class V2RequestedOutput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str = Field(description='"probabilities" or "label".')
    parameters: V2Parameters | None = Field(
        None, description='"binary_data" is ignored: outputs are always JSON.')


class V2InferRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: V2Parameters | None = Field(
        None, description='"binary_data_output" is ignored: outputs are always JSON.')
    inputs: list[V2InferInput]
    outputs: list[V2RequestedOutput] | None = Field(
        None, max_length=2, description="Outputs to return, at most the model's two "
                                        "[default: both].")


class V2InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[str] = Field(description="Row-major (flat).")


class V2InferResponse(BaseModel):
    model_name: str
    id: str | None = Field(None, description="The request's id, when it had one.")
    outputs: list[V2InferOutput]


_V2_NOT_FOUND = {404: {"model": ErrorBody}}
_V2_ERRORS = {**{status: {"model": ErrorBody} for status in (400, 404, 413, 415)}, **_BUSY}
_V2 = ["Open Inference Protocol (KServe v2)"]


# ---- the app -------------------------------------------------------------------------------

def create_app(model_dir: str | os.PathLike, *, backend: str = "onnx",
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_rows: int = DEFAULT_MAX_ROWS,
               max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
               warm_audio: bool = True) -> FastAPI:
    """The FastAPI app serving the export in `model_dir`. Loads the model now, so a bad folder
    raises GsearchError here. `warm_audio` classifies a generated tone in the background at
    startup (the audio modules imported, scipy's filters and FFT plans set up), so the first
    upload does not pay for them."""
    if max_upload_mb <= 0 or max_rows < 1 or max_audio_seconds <= 0:
        raise GsearchError("--max-upload-mb and --max-audio-seconds must be positive and "
                           "--max-rows at least 1")
    model = ExportedModel(model_dir, backend)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    cpus = os.cpu_count() or 1
    # each JSON request takes the rows it may hold: a request of --max-rows rows (or a big body) per
    # CPU at a time, many small ones
    row_slots = Slots(cpus * max_rows, "JSON requests")
    # each upload takes its samples to decode, at least a CPU's share: at most one upload per CPU
    # at a time, fewer when they are long
    decode_slots = Slots(_DECODE_BUDGET, "audio uploads", least=_DECODE_BUDGET // cpus)
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
    app.add_middleware(V2JsonByDefault)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            message = _too_large(max_bytes)
        elif exc.status_code == 404:
            message = f"no route {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            example = _V2_EXAMPLE if request.url.path.startswith("/v2/") else _EXAMPLE
            message = f"the body could not be read as JSON (not UTF-8, or nested too deep); send {example}"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        v2 = request.url.path.startswith("/v2/")
        example = _V2_EXAMPLE if v2 else _EXAMPLE
        status, message = _validation_message(exc.errors(), example)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if message.startswith("the body must be") and kind and "json" not in kind and "multipart" not in kind:
            status, message = 415, (f"the body was sent as {kind}; send JSON with "
                                    f"Content-Type: application/json (curl -H 'Content-Type: "
                                    f"application/json' ...): {example}")
        if v2 and status == 422:  # the protocol's status for a bad request
            status = 400
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(GsearchError)
    async def user_error(request: Request, exc: GsearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 422),
                            headers=getattr(exc, "headers", None))

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

    n_features, n_classes = len(model.features), len(model.classes)

    async def in_thread(request: Request, answer: Callable[[bytes, str], dict]) -> Response:
        """answer(body, content type), rendered as JSON, in a worker thread. Before its body is
        read, the request takes the rows it may hold from row_slots (a row is at least 2 bytes
        per feature; a body of unknown length may hold --max-rows)."""
        kind = request.headers.get("content-type", "")
        length = request.headers.get("content-length", "")
        rows = -(-int(length) // (2 * n_features)) if length.isdigit() else max_rows

        def rendered(raw: bytearray) -> bytes:
            return _render(answer(raw, kind))

        def rendered_big(raw: bytearray) -> bytes:
            try:
                return rendered(raw)
            finally:
                _give_back_memory()

        if rows <= _SMALL_ROWS:  # cheap: never waits behind big ones (the thread pool bounds them)
            raw = await _read_body(request)
            return Response(await run_in_threadpool(rendered, raw), media_type="application/json")
        async with row_slots.take(min(rows, max_rows)):
            raw = await _read_body(request)  # at most max_bytes (BodyLimit)
            answer = await run_in_threadpool(rendered_big, raw)
        del raw  # not kept while the answer is sent
        return Response(answer, media_type="application/json")

    def rows_answer(raw: bytes, kind: str) -> dict:
        body = _parse_body(raw, kind, PredictRequest, _EXAMPLE, max_rows, n_features)
        X = _feature_matrix(body, model.features, max_rows)
        top_k = min(body.top_k or DEFAULT_TOP_K, n_classes)
        kind = "features" if body.features is not None else "rows"
        P = _finite_output(model.predict_proba(X), lambda i: f"{kind}[{i}]")
        return {"predictions": [_row_json(model.classes, p, top_k) for p in P]}

    @app.post("/predict", summary="Classify feature rows", response_model=PredictResponse,
              responses=_JSON_ERRORS, openapi_extra=_json_body("PredictRequest"))
    async def predict_rows(request: Request) -> JSONResponse:
        return await in_thread(request, rows_answer)

    @app.post("/predict/audio", summary="Classify an audio file (multipart field `file`)",
              response_model=AudioPrediction, responses=_ERRORS)
    async def predict_upload(
            file: UploadFile = File(description="An audio file: WAV, FLAC, OGG, MP3, AU, AIFF..."),
            top_k: int | None = Query(None, ge=1, description="Keep the K most likely genres "
                                                              "[default: all]")) -> JSONResponse:
        name = _upload_name(file.filename)
        # the header checked first (cheap: a refusal does not wait for the uploads being decoded)
        path, samples = await run_in_threadpool(_stage_upload, file.file, name, max_audio_seconds)
        try:
            async with decode_slots.take(samples):  # the rest wait here without holding a thread
                prediction = await run_in_threadpool(_classify_staged, model, path, name)
        finally:
            path.unlink(missing_ok=True)
        return JSONResponse(prediction.to_json(top_k))

    # ---- the Open Inference Protocol (KServe v2): the same model, the same limits ----

    def openapi() -> dict:
        """FastAPI's schema with the request schemas stating what the server enforces (_body_schemas:
        this model's features, --max-rows, float32's range), the model name "gsearch" in the /v2
        paths, an upload of at least one byte, and without the 422 FastAPI lists for every route
        with parameters on the /v2 routes (the protocol answers a bad request with a 400)."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):  # errors are ErrorBody
                schemas.pop(unused, None)
            # the JSON bodies are parsed by the routes (_parse_body): their schemas go in here
            schemas.update(_body_schemas(model.features, max_rows))
            schemas["Body_predict_upload_predict_audio_post"]["properties"]["file"]["minLength"] = 1
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "top_k":  # optional, a whole number >= 1
                            parameter["schema"] = {"type": "integer", "minimum": 1}
                        elif parameter["name"] == "name" and path.startswith("/v2/models/"):
                            parameter["schema"] = {"type": "string", "enum": [V2_MODEL]}
                            parameter["description"] = (f"The model's name: {V2_MODEL!r} (any "
                                                        "other is answered 404).")
                    if path.startswith("/v2"):
                        operation["responses"].pop("422", None)
        return app.openapi_schema

    app.openapi = openapi

    def known(name: str) -> None:
        if name != V2_MODEL:
            raise V2Error(f"no model {name!r}; this server serves one model, {V2_MODEL!r} "
                          f"(GET /v2/models/{V2_MODEL})", status=404)

    metadata = {
        "name": V2_MODEL,  # no "versions": the model has none (no /versions/ routes)
        "platform": "onnxruntime_onnx" if model.backend == "onnx" else "pytorch",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, n_features]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}]}

    @app.get("/v2", tags=_V2, summary="Server metadata", response_model=V2ServerMetadata)
    async def v2_server() -> dict:
        return {"name": "gsearch", "version": __version__, "extensions": []}

    @app.get("/v2/health/live", tags=_V2, summary="Liveness", response_model=V2Live)
    async def v2_live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=_V2, summary="Readiness: the model is loaded (always, "
             "once the server answers)", response_model=V2Ready)
    async def v2_ready() -> dict:
        return {"ready": True}

    @app.get("/v2/models/{name}", tags=_V2, summary=f"Model metadata (the model: {V2_MODEL!r})",
             response_model=V2ModelMetadata, responses=_V2_NOT_FOUND)
    async def v2_model(name: str) -> dict:
        known(name)
        return metadata

    @app.get("/v2/models/{name}/ready", tags=_V2, summary="Model readiness",
             response_model=V2ModelReady, responses=_V2_NOT_FOUND)
    async def v2_model_ready(name: str) -> dict:
        known(name)
        return {"name": V2_MODEL, "ready": True}

    @app.post("/v2/models/{name}/infer", tags=_V2, summary=f"Classify feature rows: input "
              f"\"features\" FP32 [N, {n_features}] -> \"probabilities\" FP32 [N, {n_classes}] "
              "(in the order of GET /model \"classes\"), \"label\" BYTES [N]",
              response_model=V2InferResponse, response_model_exclude_none=True,
              responses=_V2_ERRORS, openapi_extra=_json_body("V2InferRequest"))
    async def v2_infer(name: str, request: Request) -> JSONResponse:
        known(name)
        return await in_thread(request, v2_answer)

    def v2_answer(raw: bytes, kind: str) -> dict:
        try:
            body = _parse_body(raw, kind, V2InferRequest, _V2_EXAMPLE, max_rows, n_features)
        except RequestError as e:  # the protocol's status for a bad request is 400
            raise V2Error(str(e), status=400 if e.status == 422 else e.status) from None
        if body.id is not None and not body.id.isascii():
            try:  # echoed in the answer, which is UTF-8
                body.id.encode("utf-8")
            except UnicodeEncodeError:
                raise V2Error("id is not valid Unicode (it holds an unpaired surrogate escape "
                              "such as \\ud800); send an id of plain text") from None
        wanted = _v2_outputs(body)
        X = _v2_features(body, n_features, max_rows)
        P = _finite_output(model.predict_proba(X), lambda i: f"inputs[0]: row {i}", error=V2Error)
        outputs = []
        for output in wanted:
            if output == "probabilities":
                outputs.append({"name": output, "datatype": "FP32", "shape": list(P.shape),
                                "data": P.ravel().tolist()})
            else:
                outputs.append({"name": output, "datatype": "BYTES", "shape": [len(P)],
                                "data": [model.classes[i] for i in P.argmax(axis=1)]})
        return {"model_name": V2_MODEL, **({"id": body.id} if body.id is not None else {}),
                "outputs": outputs}

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


class V2JsonByDefault:
    """ASGI middleware for the /v2/ routes: a request without a Content-Type (what Triton's
    clients send) is read as JSON, as the Open Inference Protocol's servers read it (FastAPI
    would not); one with binary tensor data (an Inference-Header-Content-Length header) is
    answered 400 before its body is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v2/"):
            names = {k.lower() for k, _ in scope["headers"]}
            if b"inference-header-content-length" in names:
                return await JSONResponse({"error": _BINARY}, status_code=400)(scope, receive, send)
            if b"content-type" not in names:
                scope = {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


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


def _upload_name(filename: str | None) -> str:
    """The client's file name as echoed back: its last path part, control characters shown as
    '?', at most 200 characters; "upload" when nothing is left (no name, or "/")."""
    name = Path(filename or "").name
    name = "".join(c if c.isprintable() else "?" for c in name)[:200]
    return name or "upload"


def _stage_upload(upload, name: str, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
                  ) -> tuple[Path, int | None]:
    """Copy an upload to a temporary file and check its header (duration, sample rate, samples:
    a 413 or 422 before any decoding, the file removed). Returns the file, which the caller
    removes once it is classified, and its samples to decode (None: the header is unreadable).
    Runs in a worker thread. Error messages name the upload, not the temporary path."""
    suffix = Path(name).suffix
    suffix = suffix.lower() if _SAFE_SUFFIX.fullmatch(suffix) else ""
    upload.seek(0)
    with tempfile.NamedTemporaryFile(prefix="gsearch-upload-", suffix=suffix, delete=False) as tmp:
        try:
            shutil.copyfileobj(upload, tmp, 1 << 20)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    path = Path(tmp.name)
    try:
        return path, check_audio_header(path, max_seconds=max_seconds)
    except AudioLimitError as e:
        path.unlink(missing_ok=True)
        status = 413 if e.kind == "length" else 422
        option = " (--max-audio-seconds)" if e.kind == "length" else ""
        raise RequestError(str(e).replace(str(path), name) + option, status=status) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _classify_staged(model: ExportedModel, path: Path, name: str):
    """predict_audio on a staged upload (in a worker thread); errors name the upload."""
    try:
        return replace(predict_audio(model, path), file=name)
    except GsearchError as e:
        raise GsearchError(str(e).replace(str(path), name)) from None
    finally:
        _give_back_memory()


async def _read_body(request: Request) -> bytearray:
    """The request's body, grown in place as it streams in (Starlette's request.body() joins its
    chunks: for a moment twice the body in memory)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
    except ClientDisconnect:  # nobody left to answer: no traceback in the log either
        raise RequestError("the client closed the connection before its body was complete",
                           status=400) from None
    return body


class Slots:
    """An asyncio semaphore of `total` units, taken in order of arrival (a big request is not
    passed over forever by small ones), `least` units at least per holder, at most `total`. At
    most _MAX_WAITING requests wait; one more is answered 503 with Retry-After at once."""

    def __init__(self, total: int, what: str, *, least: int = 1):
        self.total, self.what, self.least = total, what, max(1, min(least, total))
        self.used = self.waiting = 0
        self._line = asyncio.Lock()          # FIFO: the first in line waits for room
        self._room = asyncio.Condition()

    @asynccontextmanager
    async def take(self, units: int | None = 1):
        units = self.total if units is None else max(self.least, min(units, self.total))
        if self.waiting >= _MAX_WAITING:
            raise RequestError(f"the server is busy ({self.waiting} {self.what} waiting); retry in "
                               f"{_RETRY_AFTER_S} s", status=503,
                               headers={"Retry-After": str(_RETRY_AFTER_S)})
        self.waiting += 1
        try:
            async with self._line:
                async with self._room:
                    await self._room.wait_for(lambda: self.used + units <= self.total)
                    self.used += units
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            async with self._room:
                self.used -= units
                self._room.notify_all()


def _body_schemas(features: tuple[str, ...], max_rows: int) -> dict[str, dict]:
    """The JSON schemas of POST /predict's and POST /v2/models/gsearch/infer's bodies, as
    _parse_body, _feature_matrix and _v2_features check them: this model's features, at most
    `max_rows` rows, finite numbers within float32's range."""
    n = len(features)
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    row = {"type": "array", "items": number, "minItems": n, "maxItems": n,
           "description": f"{n} numbers in the order of GET /model \"features\"."}
    named = {"type": "object", "properties": {name: number for name in features},
             "required": list(features), "additionalProperties": False,
             "description": "Every feature of the model by name (GET /model \"features\"), no others."}
    rows = {"type": "array", "minItems": 1, "maxItems": max_rows}
    parameters = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
    return {
        "PredictRequest": {
            "title": "PredictRequest", "type": "object", "additionalProperties": False,
            "description": "Feature rows: exactly one of `features` (rows of numbers in the order "
                           "of GET /model \"features\") and `rows` (objects keyed by feature "
                           f"name); 1 to {max_rows} rows (--max-rows).",
            "properties": {
                "features": {"anyOf": [{**rows, "items": row}, {"type": "null"}]},
                "rows": {"anyOf": [{**rows, "items": named}, {"type": "null"}]},
                "top_k": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                          "description": f"Genres in each `top_k` list [default {DEFAULT_TOP_K}]."}},
            "oneOf": [{"required": ["features"], "properties": {"features": {"type": "array"}}},
                      {"required": ["rows"], "properties": {"rows": {"type": "array"}}}]},
        "V2InferInput": {
            "title": "V2InferInput", "type": "object", "additionalProperties": False,
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"const": "features", "description": "The model's only input."},
                "shape": {"type": "array", "minItems": 2, "maxItems": 2,
                          "prefixItems": [{"type": "integer", "minimum": 1, "maximum": max_rows},
                                          {"const": n}],
                          "items": {"type": "integer"},
                          "description": f"[N, {n}]: N rows, 1 to {max_rows} (--max-rows)."},
                "datatype": {"enum": list(_V2_FLOATS),
                             "description": "FP32 (FP64 is taken too and cast to FP32)."},
                "parameters": {"anyOf": [{**parameters, "properties": {"binary_data_size": False}},
                                         {"type": "null"}],
                               "description": "Binary tensor data (binary_data_size) is not "
                                              "supported."},
                "data": {"anyOf": [{"type": "array", "items": number, "minItems": n,
                                    "maxItems": max_rows * n},
                                   {**rows, "items": row}],
                         "description": f"N * {n} numbers, row after row: flat (row-major) or "
                                        f"nested as N lists of {n}; N is shape[0]."}}},
        "V2RequestedOutput": {
            "title": "V2RequestedOutput", "type": "object", "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"enum": list(_V2_OUTPUTS)},
                "parameters": {"anyOf": [{**parameters, "properties": {"classification": False}},
                                         {"type": "null"}],
                               "description": '"binary_data" is ignored: outputs are always '
                                              "JSON; the classification extension is not "
                                              "supported."}}},
        "V2InferRequest": {
            "title": "V2InferRequest", "type": "object", "additionalProperties": False,
            "required": ["inputs"],
            "properties": {
                "id": {"anyOf": [{"type": "string"}, {"type": "null"}],
                       "description": "Echoed in the response."},
                "parameters": {"anyOf": [parameters, {"type": "null"}],
                               "description": '"binary_data_output" is ignored: outputs are '
                                              "always JSON."},
                "inputs": {"type": "array", "minItems": 1, "maxItems": 1,
                           "items": {"$ref": "#/components/schemas/V2InferInput"}},
                "outputs": {"anyOf": [{"type": "array", "maxItems": len(_V2_OUTPUTS),
                                       "items": {"$ref": "#/components/schemas/V2RequestedOutput"}},
                                      {"type": "null"}],
                            "description": "Outputs to return [default: both]."}}},
    }


def _json_body(model: str) -> dict:
    """openapi_extra for a route that parses its JSON body itself: the body's schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model}"}}}}}


def _scan_json(raw: bytes, chunk: int = 1 << 20) -> tuple[int, int, int]:
    """(deepest nesting, arrays and objects, commas) of a JSON text, counted outside strings by
    a few numpy passes over each 1 MB of bytes: no Python object per value. Escaped backslashes
    and quotes are dropped first, so every quote left opens or closes a string."""
    if b"\\" in raw:  # copies of the body only where it has escapes
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    inside, depth, deepest, containers, commas = 0, 0, 0, 0, 0
    for start in range(0, len(raw), chunk):
        b = np.frombuffer(raw, np.uint8, count=min(chunk, len(raw) - start), offset=start)
        parity = (np.cumsum(b == 34, dtype=np.int64) + inside) & 1  # 1: inside a string
        outside = parity == 0
        opens = ((b == 91) | (b == 123)) & outside
        closes = ((b == 93) | (b == 125)) & outside
        levels = depth + np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int64)
        deepest = max(deepest, int(levels.max()))
        depth, inside = int(levels[-1]), int(parity[-1])
        containers += int(np.count_nonzero(opens))
        commas += int(np.count_nonzero((b == 44) & outside))
    return deepest, containers, commas


def _parse_body(raw: bytes, kind: str, model: type[BaseModel], example: str, max_rows: int,
                n_features: int):
    """The JSON body `raw` (Content-Type `kind`) validated as `model`; RequestError otherwise.
    Its size is bounded from the bytes (nesting, rows, values) before it is parsed."""
    if not raw:
        raise RequestError(f"empty body; send {example}", status=400)
    kind = kind.split(";")[0].strip().lower()
    if kind and not (kind == "application/json" or kind.endswith("+json")):
        raise RequestError(f"the body was sent as {kind}; send JSON with Content-Type: "
                           f"application/json (curl -H 'Content-Type: application/json' ...): "
                           f"{example}", status=415)
    deepest, containers, commas = _scan_json(raw)
    if deepest > _MAX_DEPTH:
        raise RequestError(f"the JSON is nested {deepest} deep, more than the {_MAX_DEPTH} "
                           f"allowed; send {example}", status=400)
    if containers > max_rows + _SLACK:
        raise RequestError(f"the body holds {containers} JSON arrays and objects, more than the "
                           f"{max_rows} rows allowed (--max-rows; each row is one); split the "
                           "request", status=413)
    if commas > (max_rows + 1) * (n_features + 4) + _SLACK:
        raise RequestError(f"the body holds over {commas} values, more than {max_rows} rows of "
                           f"{n_features} features (--max-rows); split the request", status=413)
    try:
        # Python callbacks for the numbers: the parse lets go of the GIL at each of them (one C
        # call over a 10 MB body would hold every other thread, /health's event loop included)
        data = json.loads(raw, parse_float=_parse_float, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise RequestError(f"the body could not be read as JSON (not UTF-8); send {example}",
                           status=400) from None
    except json.JSONDecodeError as e:
        raise RequestError(f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           f"send {example}", status=400) from None
    except ValueError as e:  # an integer of more digits than Python converts (4300)
        reason = str(e).split(";")[0]
        raise RequestError(f"the body could not be read as JSON ({reason}); send {example}",
                           status=400) from None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        status, message = _validation_message(errors, example)
        raise RequestError(message, status=status) from None


def _parse_float(text: str) -> float:
    return float(text)


def _parse_int(text: str) -> int:
    return int(text)


_PIECE = 1000  # list items rendered by one C call at most (_render)


def _encode(value: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def _render(value: Any) -> bytes:
    """_encode(value), in pieces of at most _PIECE list items: the GIL is let go between them (a
    10,000-row answer rendered by one C call would hold the event loop for its whole length)."""
    if isinstance(value, dict):
        return b"{" + b",".join(_encode(str(k)) + b":" + _render(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        if len(value) > _PIECE:
            return b"[" + b",".join(_encode(value[i:i + _PIECE])[1:-1]
                                    for i in range(0, len(value), _PIECE)) + b"]"
        if any(isinstance(v, (dict, list)) for v in value):
            return b"[" + b",".join(_render(v) for v in value) + b"]"
    return _encode(value)


def _finite_output(P: np.ndarray, where: Callable[[int], str], *,
                   error: type[RequestError] = RequestError) -> np.ndarray:
    """The model's probabilities when all are finite; else the error that names the first row
    (finite float32 inputs far outside the training data can overflow the network)."""
    bad = ~np.isfinite(P).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise error(f"{where(i)}: the model's output overflows for these values (not finite); "
                    "send features in the range of the training data",
                    status=422 if error is RequestError else 400)
    return P


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
        return _float32(np.array(body.features, dtype=np.float64),
                        lambda i, j: f"features[{i}][{j}]")
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
    return _float32(np.array([[row[k] for k in features] for row in body.rows], dtype=np.float64),
                    lambda i, j: f"rows[{i}][{features[j]!r}]")


def _float32(X: np.ndarray, where: Callable[[int, int], str]) -> np.ndarray:
    """X (float64, finite) as float32; RequestError naming the first value beyond float32's range."""
    big = np.abs(X) > FLOAT32_MAX
    if big.any():
        i, j = np.unravel_index(int(np.argmax(big)), X.shape)
        raise RequestError(f"{where(int(i), int(j))} is {X[i, j]:g}, beyond the float32 range "
                           f"(±{FLOAT32_MAX:.3g}) the model computes in")
    return X.astype(np.float32)


def _row_json(classes: tuple[str, ...], p: np.ndarray, top_k: int) -> dict:
    order = np.argsort(-p, kind="stable")
    ranked = [(classes[i], float(p[i])) for i in order]
    return {"genre": ranked[0][0], "probabilities": dict(ranked),
            "top_k": [{"genre": g, "probability": v} for g, v in ranked[:top_k]]}


_V2_OUTPUTS = ("probabilities", "label")


def _v2_outputs(body: V2InferRequest) -> list[str]:
    """The names of the outputs asked for (all by default); V2Error for an unknown one."""
    if body.outputs is None:
        return list(_V2_OUTPUTS)
    names = []
    for i, output in enumerate(body.outputs):
        if output.name not in _V2_OUTPUTS:
            raise V2Error(f"outputs[{i}]: no output {output.name!r}; the model's outputs are "
                          "'probabilities' and 'label'")
        if "classification" in (output.parameters or {}):
            raise V2Error(f"outputs[{i}]: the classification extension is not supported; ask "
                          "for 'label' (the most likely genre) or 'probabilities'")
        names.append(output.name)
    return names or list(_V2_OUTPUTS)


def _v2_features(body: V2InferRequest, n_features: int, max_rows: int) -> np.ndarray:
    """The request's input tensor "features" as float32 [N, n_features]; V2Error otherwise."""
    if len(body.inputs) != 1 or body.inputs[0].name != "features":
        names = ", ".join(repr(t.name) for t in body.inputs) or "none"
        raise V2Error(f"the model takes one input, 'features' (got {names}); send {_V2_EXAMPLE}")
    tensor = body.inputs[0]
    if "binary_data_size" in (tensor.parameters or {}):
        raise V2Error(_BINARY)
    if tensor.datatype not in _V2_FLOATS:
        raise V2Error(f"inputs[0].datatype is {tensor.datatype!r}; the model takes FP32 (or FP64)")
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise V2Error(f"inputs[0].shape is {shape}; the model takes [N, {n_features}] with N >= 1 "
                      "rows of features in the order of GET /model \"features\"")
    n = shape[0]
    if n > max_rows:
        raise V2Error(f"{n} rows is more than the {max_rows} allowed (--max-rows); split the "
                      "request", status=413)
    data = tensor.data
    nested = any(isinstance(v, list) for v in data)
    if nested:  # one list of numbers per row
        if len(data) != n or not all(isinstance(v, list) and len(v) == n_features for v in data):
            i = next((i for i, v in enumerate(data) if not isinstance(v, list)
                      or len(v) != n_features), len(data))
            what = (f"{len(data)} rows" if i == len(data) else
                    f"data[{i}] is " + (f"a list of {len(data[i])} values" if isinstance(data[i], list)
                                        else "not a list"))
            raise V2Error(f"inputs[0].data is nested but {what}; shape {shape} needs {n} lists "
                          f"of {n_features} numbers (or {n * n_features} numbers, flat)")
        values = [v for row in data for v in row]
    else:
        values = data
    at = (lambda i: f"data[{i // n_features}][{i % n_features}]") if nested else (lambda i: f"data[{i}]")
    if len(values) != n * n_features:
        raise V2Error(f"inputs[0].data has {len(values)} values; shape {shape} needs "
                      f"{n * n_features}")
    for i, v in enumerate(values):
        if type(v) not in (int, float):  # bool, text and null are not numbers
            shown = json.dumps(v)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise V2Error(f"inputs[0].{at(i)} is {shown}, not a number")
    try:
        X = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64: the check below names it
        X = np.array([v if abs(v) <= FLOAT32_MAX else np.inf for v in values])
    bad = ~np.isfinite(X) | (np.abs(X) > FLOAT32_MAX)
    if bad.any():
        i = int(np.argmax(bad))
        shown = json.dumps(values[i]) if not isinstance(values[i], int) else str(values[i])
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise V2Error(f"inputs[0].{at(i)} is {shown}, not a finite {tensor.datatype} number in "
                      f"float32's range (±{FLOAT32_MAX:.3g}; NaN and Infinity are refused)")
    return X.astype(np.float32).reshape(n, n_features)


def _validation_message(errors, example: str = _EXAMPLE) -> tuple[int, str]:
    """(status, one line) for FastAPI's validation errors: the first error, where it is."""
    if not errors:
        return 422, "invalid request; see /docs"
    first = errors[0]
    kind, loc = first.get("type", ""), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        return 400, f"malformed JSON ({reason}); send {example}"
    if loc == ("body",) and kind == "missing":
        return 400, f"empty body; send {example}"
    if loc[:2] == ("body", "file") and kind == "missing":
        return 400, ("no file; upload the audio as multipart/form-data field 'file' "
                     "(curl -F file=@song.wav ...)")
    if loc[:2] == ("body", "file"):  # a form field 'file' that is text, not a file (no filename)
        return 400, ("the field 'file' is not a file upload (no filename in its "
                     "Content-Disposition); upload the audio as a file: curl -F file=@song.wav ...")
    if loc == ("body",):
        return 422, f"the body must be a JSON object: {example}"
    if kind == "extra_forbidden" and len(loc) == 2:
        return 422, f"unknown field {loc[1]!r}; send {example}"
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


def serve(model_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, backend: str = "onnx", max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          max_rows: int = DEFAULT_MAX_ROWS, max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
          echo: Callable[[str], None] = print) -> None:
    """Serve the export in `model_dir` until Ctrl-C or SIGTERM. The model is loaded and the port
    bound before anything is served, so a bad folder or a taken port fails at once."""
    import uvicorn

    settings = {"model_dir": str(model_dir), "backend": backend, "max_upload_mb": max_upload_mb,
                "max_rows": max_rows, "max_audio_seconds": max_audio_seconds}
    app = create_app(**settings)  # a bad folder fails here, before binding
    model = app.state.model
    check_port(host, port)
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
