"""What the server answers: the model's Answer for a FeatureBatch, rendered as the one prediction
object of the REST routes or as the Open Inference Protocol's output tensors, and the response
models that document both in /openapi.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import Response

from gsearch.models.predict import ExportedModel
from gsearch.serve.errors import RequestError
from gsearch.serve.requests import DEFAULT_TOP_K, FeatureBatch
from gsearch.serve.v2 import V2_MODEL, binary_tensor


@dataclass(frozen=True)
class Answer:
    """The model's answer for a batch: a classifier's probabilities of each class per row,
    [N, n_classes] in the order of `classes`, or a regression's number per row, `values` [N].
    Rendered as the REST routes' prediction objects or the protocol's output tensors."""

    classes: tuple[str, ...]
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None

    def mean(self) -> Answer:
        """One row: the average of the rows (an audio file's windows)."""
        if self.values is not None:
            return Answer(self.classes, values=self.values.mean(keepdims=True))
        return Answer(self.classes, self.probabilities.mean(axis=0, keepdims=True))

    def predictions(self, top_k: int, *, file: str | None = None,
                    windows: int | None = None) -> list[dict]:
        """One prediction object per row (the audio's `file` and `windows` where given): a
        classifier's genre, probabilities and top_k, or a regression's value."""
        head = {} if file is None else {"file": file}
        tail = {} if windows is None else {"windows": windows}
        if self.values is not None:
            return [{**head, "value": v, **tail} for v in self.values.tolist()]
        order = np.argsort(-self.probabilities, axis=1, kind="stable")
        answers = []
        for p, ranked in zip(self.probabilities, order):
            pairs = [(self.classes[i], float(p[i])) for i in ranked]
            answers.append({**head, "genre": pairs[0][0], "probabilities": dict(pairs),
                            "top_k": [{"genre": g, "probability": v} for g, v in pairs[:top_k]],
                            **tail})
        return answers

    def tensors(self, names: Sequence[str]) -> list[tuple[str, str, list[int], Any]]:
        """The Open Inference Protocol's output tensors `names`: (name, datatype, shape, data),
        data a numpy array or a list of text."""
        if self.values is not None:
            return [("prediction", "FP32", [len(self.values)], self.values) for _ in names]
        P, outputs = self.probabilities, []
        for name in names:
            if name == "probabilities":
                outputs.append((name, "FP32", list(P.shape), P))
            else:
                outputs.append((name, "BYTES", [len(P)], [self.classes[i] for i in P.argmax(axis=1)]))
        return outputs


def model_answer(model: ExportedModel, batch: FeatureBatch) -> Answer:
    """The model's answer for the batch; RequestError naming the first row whose answer is not
    finite (finite float32 inputs far outside the training data can overflow the network)."""
    X = batch.matrix(model)
    out = model.predict_values(X) if model.regression else model.predict_proba(X)
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        raise RequestError(f"{batch.row_label.format(int(np.argmax(bad)))}: the model's output "
                           "overflows for these values (not finite); send features in the range "
                           "of the training data")
    if model.regression:
        return Answer(model.classes, values=out.astype(np.float32))
    return Answer(model.classes, out)


def infer_response(answer: Answer, names: Sequence[str], binary: set[str],
                   echo: dict) -> bytes | Response:
    """The protocol's answer: JSON, or, when outputs are asked as binary tensor data, the JSON
    header (its length in Inference-Header-Content-Length) followed by their bytes."""
    outputs, chunks = [], []
    for name, datatype, shape, data in answer.tensors(names):
        tensor = {"name": name, "datatype": datatype, "shape": shape}
        if name in binary:
            chunks.append(binary_tensor(datatype, data))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = data.ravel().tolist() if isinstance(data, np.ndarray) else data
        outputs.append(tensor)
    head = render({"model_name": V2_MODEL, **echo, "outputs": outputs})
    if not chunks:
        return head
    return Response(head + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


# ---- the response bodies, for /openapi.json --------------------------------------------------

class Ranked(BaseModel):
    genre: str
    probability: float


class Prediction(BaseModel):
    """What every REST route answers for a row or a file: its fields depend on the model's task
    (GET /model "task"): a classifier's `genre`, `probabilities` and `top_k`, or a
    regression's `value`."""

    file: Optional[str] = Field(None, description="POST /predict/audio: the uploaded file's name.")
    genre: Optional[str] = Field(None, description="A classifier's: the most likely class "
                                                   "(genre).")
    probabilities: Optional[dict[str, float]] = Field(None, description="A classifier's: every "
                                                      "class, most likely first.")
    top_k: Optional[list[Ranked]] = Field(None, description=f"A classifier's: the top_k most "
                                          f"likely classes [default {DEFAULT_TOP_K}], most likely "
                                          "first.")
    value: Optional[float] = Field(None, description="A regression's: the predicted number, in "
                                                     "the target's units.")
    windows: Optional[int] = Field(None, description="POST /predict/audio: clip-long windows "
                                                     "averaged (1: the audio was classified whole).")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per row, in the order sent.")


class ErrorBody(BaseModel):
    error: str


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions supported: "
                                              "binary_tensor_data.")


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
    data: Optional[list[float] | list[str]] = Field(None, description="Row-major (flat); absent "
                                                    "for an output sent as binary tensor data.")
    parameters: Optional[dict[str, int]] = Field(None, description="binary_data_size: the bytes "
                                                 "of an output sent as binary tensor data.")


class V2InferResponse(BaseModel):
    model_name: str
    id: Optional[str] = Field(None, description="The request's id, when it had one.")
    outputs: list[V2InferOutput] = Field(description="The outputs asked for [default: all].")


_BUSY = {503: {"model": ErrorBody, "description": "Too many heavy requests waiting; retry after "
                                                   "Retry-After seconds",
               "headers": {"Retry-After": {"description": "Seconds to wait before retrying.",
                                           "schema": {"type": "integer"}}}}}
ERRORS = {**{status: {"model": ErrorBody} for status in (400, 413, 422)}, **_BUSY}
JSON_ERRORS = {**ERRORS, 415: {"model": ErrorBody}}  # a JSON body sent as a form or text
V2_NOT_FOUND = {404: {"model": ErrorBody}}
# outputs asked as binary tensor data: the JSON header (Inference-Header-Content-Length bytes) and
# their bytes after it
V2_BINARY = {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                 "format": "binary"}}},
             "headers": {"Inference-Header-Content-Length": {
                 "description": "Binary answers: the length of the JSON header that starts the "
                                "body.", "schema": {"type": "integer"}}}}
V2_ERRORS = {**{status: {"model": ErrorBody} for status in (400, 404, 413, 415)}, **_BUSY}


# ---- rendering ---------------------------------------------------------------------------------

_VALUES = 50_000  # values rendered by one C call at most (a few milliseconds: render)


def _encode(value: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def _size(value: Any) -> int:
    """The values in `value`, a list's estimated from its first item (an answer's lists hold
    items of one shape: rows, tensors)."""
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + len(value) * _size(value[0]) if value else 1
    return 1


def render(value: Any) -> bytes:
    """_encode(value), in pieces of at most about _VALUES values: the GIL is let go between
    them (a 10,000-row answer rendered by one C call would hold the event loop for its whole
    length), and an ordinary answer is one call (one per value cost 2.5x the request)."""
    if _size(value) <= _VALUES:
        return _encode(value)
    if isinstance(value, dict):
        return b"{" + b",".join(_encode(str(k)) + b":" + render(v) for k, v in value.items()) + b"}"
    step = (_VALUES - 1) // _size(value[0])   # items whose values fit one call
    if step <= 1:
        return b"[" + b",".join(render(v) for v in value) + b"]"
    return b"[" + b",".join(render(value[i:i + step])[1:-1]
                            for i in range(0, len(value), step)) + b"]"
