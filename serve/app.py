"""The FastAPI app: the routes, at module level, over one State per app (request.app.state.serve),
and the one request pipeline they share: body -> FeatureBatch (serve/requests.py, or
serve/uploads.py for audio) -> model_answer -> Answer -> JSON (serve/responses.py), every refusal a
RequestError (serve/errors.py) answered {"error": "one line"}."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Callable

import python_multipart  # noqa: F401  (FastAPI's form parser: missing, the CLI says what to install)
from fastapi import APIRouter, FastAPI, File, Path as PathParam, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gsearch import GsearchError, __version__
from gsearch.data.audio import DEFAULT_MAX_AUDIO_SECONDS
from gsearch.data.schema import NUMERIC
from gsearch.models.predict import ExportedModel
from gsearch.serve.docs import docs_page
from gsearch.serve.errors import V2_PREFIX, RequestError, out_of_space, status_of, too_large
from gsearch.serve.limits import (DECODE_BUDGET, BodyLimit, Slots, answer_body, give_back_memory,
                                  too_slow)
from gsearch.serve.messages import explain_parameters
from gsearch.serve.requests import DEFAULT_MAX_VALUES, DEFAULT_TOP_K, Contract
from gsearch.serve.responses import (ERRORS, JSON_ERRORS, V2_ERRORS, V2_NOT_FOUND, Prediction,
                                     PredictResponse, V2InferResponse, V2Live, V2ModelMetadata,
                                     V2_BINARY, V2ModelReady, V2Ready, V2ServerMetadata,
                                     infer_response,
                                     model_answer, render)
from gsearch.serve.uploads import audio_batch, audio_refusal, stage_upload, upload_name, write_tone
from gsearch.serve.v2 import BYTES, HEADER, MATRIX, V2_MODEL, binary_outputs

DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_BODY_TIMEOUT_S = 30.0   # --body-timeout: the most a request body may take to arrive
_V2 = ["Open Inference Protocol (KServe v2)"]


@dataclass
class State:
    """What the routes of one app share: the model, its request contract and the limits."""

    model: ExportedModel
    contract: Contract
    body_timeout: float            # --body-timeout
    max_bytes: int                 # --max-upload-mb
    max_audio_seconds: float
    value_slots: Slots             # the values JSON bodies may hold, --max-values per CPU
    decode_slots: Slots            # the samples uploads decode, limits.DECODE_BUDGET
    warm_audio: bool
    audio_refusal: str | None      # why this model cannot classify audio, if it cannot
    audio_ready: threading.Event = field(default_factory=threading.Event)


def served(request: Request) -> State:
    return request.app.state.serve


router = APIRouter()


@router.get("/health", summary="Liveness: the model is loaded and the server answers")
async def health(request: Request) -> dict:
    state = served(request)
    return {"status": "ok", "backend": state.model.backend, "audio_ready": state.audio_ready.is_set()}


@router.get("/model", summary="The export's model.json: classes, features, test accuracy, versions")
async def model_info(request: Request) -> dict:
    return served(request).model.meta


def _json_body(schema: str) -> dict:
    """openapi_extra of a route that parses its JSON body itself: the body's schema (a request
    model of serve/requests.py, in the components by ServeApp.openapi)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}


@router.get("/docs", summary="This API's documentation: an HTML page of the OpenAPI schema",
            include_in_schema=False)
async def docs(request: Request) -> Response:
    return Response(docs_page(request.app.openapi()), media_type="text/html; charset=utf-8")


@router.post("/predict", summary="Predict feature rows", response_model=PredictResponse,
             responses=JSON_ERRORS, openapi_extra=_json_body("PredictRequest"))
async def predict_rows(request: Request) -> Response:
    return await _json_route(request, _predict)


async def _json_route(request: Request, answer: Callable[..., bytes | Response]) -> Response:
    """A JSON route: answer(state, request headers, body, content type), under the value budget
    (limits.answer_body)."""
    state = served(request)
    return await answer_body(request, state.value_slots, max_values=state.contract.max_values,
                             n_features=len(state.model.features),
                             answer=partial(answer, state, request.headers))


def _predict(state: State, headers, raw: bytes, content_type: str) -> bytes:
    batch, top_k = state.contract.predict_request(raw, content_type)
    answer = model_answer(state.model, batch)
    return render({"predictions": answer.predictions(min(top_k, len(answer.classes)))})


@router.post("/predict/audio", summary="Classify an audio file (multipart field `file`)",
             response_model=Prediction, responses=ERRORS)
async def predict_upload(
        request: Request,
        # minLength in the schema only: File(min_length=1) would make pydantic take len() of the
        # upload (a 500); an empty file is refused by the audio check, naming the file
        file: UploadFile = File(description="An audio file: WAV, FLAC, OGG, MP3, AU, AIFF...",
                                json_schema_extra={"minLength": 1}),
        top_k: int = Query(DEFAULT_TOP_K, ge=1, description="Genres in the `top_k` list.")
) -> Response:
    state = served(request)
    name = upload_name(file.filename)
    if state.audio_refusal:
        raise RequestError(f"{name}: {state.audio_refusal}")
    # the header checked first (cheap: a refusal does not wait for the uploads being decoded)
    path, samples = await run_in_threadpool(stage_upload, file.file, name, state.max_audio_seconds)
    try:
        async with state.decode_slots.take(samples):  # the rest wait here without holding a thread
            body = await run_in_threadpool(_classify_upload, state, path, name, top_k)
    finally:
        path.unlink(missing_ok=True)
    return Response(body, media_type="application/json")


def _classify_upload(state: State, path: Path, name: str, top_k: int) -> bytes:
    """The staged upload's prediction (decoded and classified here, in a worker thread): the
    average of its windows' probabilities."""
    try:
        batch = audio_batch(state.model, path, name)
        answer = model_answer(state.model, batch).mean()
        top_k = min(top_k, len(answer.classes))
        return render(answer.predictions(top_k, file=name, windows=batch.n_rows)[0])
    finally:
        give_back_memory()


# ---- the Open Inference Protocol (KServe v2): the same model, the same pipeline -----------------

ModelName = Annotated[str, PathParam(
    description=f"The model's name: {V2_MODEL!r} (any other is answered 404).",
    json_schema_extra={"enum": [V2_MODEL]})]


def _known(name: str) -> None:
    if name != V2_MODEL:
        raise RequestError(f"no model {name!r}; this server serves one model, {V2_MODEL!r} "
                           f"(GET /v2/models/{V2_MODEL})", "not_found")


@router.get("/v2", tags=_V2, summary="Server metadata", response_model=V2ServerMetadata)
async def v2_server() -> dict:
    return {"name": "gsearch", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live", tags=_V2, summary="Liveness", response_model=V2Live)
async def v2_live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready", tags=_V2, summary="Readiness: the model is loaded (always, once "
            "the server answers)", response_model=V2Ready)
async def v2_ready() -> dict:
    return {"ready": True}


@router.get("/v2/models/{name}", tags=_V2, summary=f"Model metadata (the model: {V2_MODEL!r})",
            response_model=V2ModelMetadata, responses=V2_NOT_FOUND)
async def v2_model(name: ModelName, request: Request) -> dict:
    _known(name)
    state = served(request)
    model, contract = state.model, state.contract
    if contract.matrix_input:
        inputs = [{"name": MATRIX, "datatype": "FP32", "shape": [-1, len(model.features)]}]
    else:  # one per feature
        inputs = [{"name": f, "datatype": "FP32" if k == NUMERIC else BYTES, "shape": [-1]}
                  for f, k in zip(model.features, model.kinds)]
    if model.regression:
        outputs = [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    else:
        outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                   {"name": "label", "datatype": BYTES, "shape": [-1]}]
    return {"name": V2_MODEL,  # no "versions": the model has none (no /versions/ routes)
            "platform": "onnxruntime_onnx" if model.backend == "onnx" else "pytorch",
            "inputs": inputs, "outputs": outputs}


@router.get("/v2/models/{name}/ready", tags=_V2, summary="Model readiness",
            response_model=V2ModelReady, responses=V2_NOT_FOUND)
async def v2_model_ready(name: ModelName) -> dict:
    _known(name)
    return {"name": V2_MODEL, "ready": True}


@router.post("/v2/models/{name}/infer", tags=_V2, summary="Predict feature rows: input "
             "\"features\" FP32 [N, n_features] (a model of numbers) or one input per feature "
             "(FP32 [N] or BYTES [N]) -> \"probabilities\" FP32 [N, n_classes] (in the order of "
             "GET /model \"classes\") and \"label\" BYTES [N], or a regression's "
             "\"prediction\" FP32 [N]; JSON or binary tensor data",
             response_model=V2InferResponse, responses={**V2_ERRORS, 200: V2_BINARY},
             openapi_extra=_json_body("V2InferRequest"))
async def v2_infer(name: ModelName, request: Request) -> Response:
    _known(name)
    return await _json_route(request, _infer)


def _infer(state: State, headers, raw: bytes, content_type: str) -> bytes | Response:
    batch, body = state.contract.infer_request(raw, content_type, headers.get(HEADER))
    answer = model_answer(state.model, batch)
    names = [output.name for output in body.outputs or ()] or list(state.contract.outputs)
    echo = {} if body.id is None else {"id": body.id}
    return infer_response(answer, names, binary_outputs(body, names), echo)


class V2JsonByDefault:
    """ASGI middleware for the /v2/ routes: a request without a Content-Type (what Triton's
    clients send) is read as JSON, as the Open Inference Protocol's servers read it (FastAPI
    would not)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(V2_PREFIX):
            names = {k.lower() for k, _ in scope["headers"]}
            if b"content-type" not in names:
                json_type = (b"content-type", b"application/json")
                scope = {**scope, "headers": [*scope["headers"], json_type]}
        await self.app(scope, receive, send)


# ---- errors: every one {"error": "one line"} ---------------------------------------------------

async def _refused(request: Request, exc: GsearchError) -> JSONResponse:
    """A RequestError, or a GsearchError of the model's code (an upload that is not audio)."""
    status = status_of(getattr(exc, "kind", "invalid"), request.url.path)
    return JSONResponse({"error": str(exc)}, status_code=status,
                        headers=getattr(exc, "headers", None))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    path = request.url.path
    if exc.status_code == 413:
        error = RequestError(too_large(served(request).max_bytes), "too_large")
    elif exc.status_code == 408:
        error = too_slow(served(request).body_timeout)
    elif isinstance(exc.__cause__, OSError) and exc.__cause__.errno in (errno.ENOSPC, errno.EDQUOT):
        error = out_of_space()  # the upload's form spooled to a full TMPDIR
    elif exc.status_code == 404:
        error = RequestError(f"no route {path}; see /docs", "not_found")
    elif exc.status_code == 405:
        error = RequestError(f"{request.method} is not allowed on {path}; see /docs", "not_allowed",
                             headers=exc.headers)
    elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        error = RequestError("the body could not be read as multipart/form-data; upload the "
                             "audio as the form's field 'file' (curl -F file=@song.wav ...)",
                             "malformed")
    else:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)
    return await _refused(request, error)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _refused(request, explain_parameters(exc.errors()))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this answer: uvicorn logs its traceback.
    return JSONResponse({"error": "internal server error; the server log has the details"},
                        status_code=500)


# ---- the app -----------------------------------------------------------------------------------

class ServeApp(FastAPI):
    def openapi(self) -> dict:
        """FastAPI's schema with the request bodies' schemas of this app's Contract (the routes
        parse their JSON bodies themselves) and without the 422 that FastAPI lists for every
        route with parameters on the /v2 routes (the protocol answers a bad request 400)."""
        if self.openapi_schema is None:
            schema = super().openapi()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(self.state.serve.contract.schemas())
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    if path.startswith("/v2"):
                        operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):  # errors are ErrorBody
                schemas.pop(unused, None)
        return self.openapi_schema


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state = app.state.serve
    if state.warm_audio and state.audio_refusal is None:
        threading.Thread(target=_warm_audio, args=(state,), name="warm-audio", daemon=True).start()
    yield


def _warm_audio(state: State) -> None:
    """Classify a short generated tone once, as an upload is: the audio modules are imported and
    scipy's filters and FFT plans set up before the first upload comes."""
    try:
        with tempfile.TemporaryDirectory(prefix="gsearch-warm-") as tmp:
            path = write_tone(Path(tmp) / "warm.wav")
            model_answer(state.model, audio_batch(state.model, path, path.name))
    except Exception as e:  # the first upload will load what it needs itself
        logging.getLogger("uvicorn.error").warning("audio warm-up failed (%s); the first upload "
                                                   "will be slower", e)
        return
    state.audio_ready.set()


def create_app(model_dir: str | os.PathLike, *, backend: str = "onnx",
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_rows: int = DEFAULT_MAX_ROWS,
               max_values: int = DEFAULT_MAX_VALUES,
               max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
               body_timeout: float = DEFAULT_BODY_TIMEOUT_S, warm_audio: bool = True) -> FastAPI:
    """The FastAPI app serving the export in `model_dir`. Loads the model now, so a bad folder
    raises GsearchError here. `warm_audio` classifies a generated tone in the background at
    startup, so the first upload does not pay for setting up the audio code."""
    if min(max_upload_mb, max_audio_seconds, body_timeout) <= 0 or min(max_rows, max_values) < 1:
        raise GsearchError("--max-upload-mb, --max-audio-seconds and --body-timeout must be "
                           "positive and --max-rows and --max-values at least 1")
    model = ExportedModel(model_dir, backend)
    cpus = os.cpu_count() or 1
    contract = Contract(model.features, max_rows, kinds=model.kinds,
                        table=model.encoding is not None, regression=model.regression,
                        max_values=max_values)
    state = State(
        model=model, contract=contract, body_timeout=body_timeout,
        max_bytes=int(max_upload_mb * 1024 * 1024), max_audio_seconds=max_audio_seconds,
        # each JSON request takes the values it may hold (rows x features, from its bytes): one
        # request of the most values allowed (or a big body) per CPU at a time, many small ones
        value_slots=Slots(cpus * contract.max_values, "JSON requests"),
        # each upload takes its samples to decode, at least a CPU's share: at most one upload per
        # CPU at a time, fewer when they are long
        decode_slots=Slots(DECODE_BUDGET, "audio uploads", least=DECODE_BUDGET // cpus),
        warm_audio=warm_audio, audio_refusal=audio_refusal(model.features))
    what = (f"Regression ({len(model.features)} features)" if model.regression else
            f"Classifier ({len(model.classes)} classes, {len(model.features)} features)")
    app = ServeApp(title="gsearch model server", version=__version__, lifespan=_lifespan,
                   description=f"{what} exported by gsearch. Errors are JSON "
                               '{"error": "..."}.',
                   docs_url=None, redoc_url=None,  # /docs: serve/docs.py's page, no CDN
                   exception_handlers={HTTPException: _http_error, RequestValidationError: _invalid,
                                       GsearchError: _refused, Exception: _server_error})
    app.state.serve = state
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=state.max_bytes, timeout_s=body_timeout)
    app.add_middleware(V2JsonByDefault)
    return app
