"""What the server answers: the model's Answer for a FeatureBatch, rendered as the one prediction
object of the REST routes or as the Open Inference Protocol's output tensors, and the response
models that document both in /openapi.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from pydantic import BaseModel, Field

from gsearch.models.predict import ExportedModel
from gsearch.serve.errors import RequestError
from gsearch.serve.requests import DEFAULT_TOP_K, FeatureBatch


@dataclass(frozen=True)
class Answer:
    """The model's answer for a batch: per row the probability of each class, [N, n_classes]
    in the order of `classes`. (A regression model's answer would be a number per row, with the
    same two renderings.)"""

    classes: tuple[str, ...]
    probabilities: np.ndarray

    def mean(self) -> Answer:
        """One row: the average of the rows' probabilities (an audio file's windows)."""
        return Answer(self.classes, self.probabilities.mean(axis=0, keepdims=True))

    def predictions(self, top_k: int, *, file: str | None = None,
                    windows: int | None = None) -> list[dict]:
        """One prediction object per row (the audio's `file` and `windows` where given)."""
        head = {} if file is None else {"file": file}
        tail = {} if windows is None else {"windows": windows}
        order = np.argsort(-self.probabilities, axis=1, kind="stable")
        answers = []
        for p, ranked in zip(self.probabilities, order):
            pairs = [(self.classes[i], float(p[i])) for i in ranked]
            answers.append({**head, "genre": pairs[0][0], "probabilities": dict(pairs),
                            "top_k": [{"genre": g, "probability": v} for g, v in pairs[:top_k]],
                            **tail})
        return answers

    def tensors(self, names: Sequence[str]) -> list[dict]:
        """The Open Inference Protocol's output tensors `names`, JSON data, row-major."""
        P = self.probabilities
        outputs = []
        for name in names:
            if name == "probabilities":
                outputs.append({"name": name, "datatype": "FP32", "shape": list(P.shape),
                                "data": P.ravel().tolist()})
            else:
                outputs.append({"name": name, "datatype": "BYTES", "shape": [len(P)],
                                "data": [self.classes[i] for i in P.argmax(axis=1)]})
        return outputs


def classify(model: ExportedModel, batch: FeatureBatch) -> Answer:
    """The model's answer for the batch; RequestError naming the first row whose probabilities
    are not finite (finite float32 inputs far outside the training data can overflow the
    network)."""
    P = model.predict_proba(batch.matrix(model.features))
    bad = ~np.isfinite(P).all(axis=1)
    if bad.any():
        raise RequestError(f"{batch.row_label.format(int(np.argmax(bad)))}: the model's output "
                           "overflows for these values (not finite); send features in the range "
                           "of the training data")
    return Answer(model.classes, P)


# ---- the response bodies, for /openapi.json --------------------------------------------------

class Ranked(BaseModel):
    genre: str
    probability: float


class Prediction(BaseModel):
    """What every REST route answers for a row or a file."""

    file: Optional[str] = Field(None, description="POST /predict/audio: the uploaded file's name.")
    genre: str = Field(description="The most likely genre.")
    probabilities: dict[str, float] = Field(description="Every genre, most likely first.")
    top_k: list[Ranked] = Field(description=f"The top_k most likely genres [default "
                                            f"{DEFAULT_TOP_K}], most likely first.")
    windows: Optional[int] = Field(None, description="POST /predict/audio: clip-long windows "
                                                     "averaged (1: the audio was classified whole).")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per row, in the order sent.")


class ErrorBody(BaseModel):
    error: str


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


class V2InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[str] = Field(description="Row-major (flat).")


class V2InferResponse(BaseModel):
    model_name: str
    id: Optional[str] = Field(None, description="The request's id, when it had one.")
    outputs: list[V2InferOutput] = Field(description="The outputs asked for [default: both].")


_BUSY = {503: {"model": ErrorBody, "description": "Too many heavy requests waiting; retry after "
                                                   "Retry-After seconds",
               "headers": {"Retry-After": {"description": "Seconds to wait before retrying.",
                                           "schema": {"type": "integer"}}}}}
ERRORS = {**{status: {"model": ErrorBody} for status in (400, 413, 422)}, **_BUSY}
JSON_ERRORS = {**ERRORS, 415: {"model": ErrorBody}}  # a JSON body sent as a form or text
V2_NOT_FOUND = {404: {"model": ErrorBody}}
V2_ERRORS = {**{status: {"model": ErrorBody} for status in (400, 404, 413, 415)}, **_BUSY}


# ---- rendering ---------------------------------------------------------------------------------

_PIECE = 1000  # list items rendered by one C call at most (render)


def _encode(value: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def render(value: Any) -> bytes:
    """_encode(value), in pieces of at most _PIECE list items: the GIL is let go between them (a
    10,000-row answer rendered by one C call would hold the event loop for its whole length)."""
    if isinstance(value, dict):
        return b"{" + b",".join(_encode(str(k)) + b":" + render(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        if len(value) > _PIECE:
            return b"[" + b",".join(_encode(value[i:i + _PIECE])[1:-1]
                                    for i in range(0, len(value), _PIECE)) + b"]"
        if any(isinstance(v, (dict, list)) for v in value):
            return b"[" + b",".join(render(v) for v in value) + b"]"
    return _encode(value)
