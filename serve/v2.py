"""The Open Inference Protocol (KServe v2, also spoken by Triton): POST /v2/models/gsearch/infer's
request models, built per model as serve/requests.py builds the REST ones, and the binary tensor
data extension (Triton's HTTP client sends and asks for it by default).

Inputs: either one tensor "features" FP32/FP64 [N, n_features] (a model whose features are all
numbers), or one tensor per feature, named by the feature, shape [N] or [N, 1], flat data:
FP32/FP64/FP16/INT*/UINT* for a numeric feature, BYTES for a categorical one (null: an empty
cell, where the model imputes them). Outputs: "probabilities" FP32 [N, n_classes] and "label"
BYTES [N] of a classifier, "prediction" FP32 [N] of a regression.

Binary tensor data: the request's JSON header is the first Inference-Header-Content-Length bytes
of the body; each input whose parameters hold "binary_data_size" has no "data" there, its bytes
follow the header in the order of the inputs (little-endian; BYTES: each element a 4-byte
little-endian length and its bytes). Such a request is turned into the JSON one here (decoded to
"data") before it is validated, within the same budgets. An output is answered binary when its
"binary_data" parameter (or else the request's "binary_data_output") is true.
"""

from __future__ import annotations

import json
import struct
from typing import Annotated, Any, Callable, Literal, Optional, Sequence, Union

import numpy as np
import pydantic
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, WrapValidator,
                      create_model, model_validator)
from pydantic_core import PydanticCustomError

from gsearch.data.schema import CATEGORICAL, NUMERIC
from gsearch.serve.errors import RequestError
from gsearch.serve.messages import data_size
from gsearch.serve.values import WHOLE, Body, Scalar, row_type, rows_of, value_type, whole

V2_MODEL = "gsearch"  # the model's name in the Open Inference Protocol routes (/v2/models/gsearch)
CLASSIFIER_OUTPUTS, REGRESSION_OUTPUTS = ("probabilities", "label"), ("prediction",)
MATRIX = "features"   # the one input tensor of a model of numbers
# the datatypes of the protocol that hold numbers, as little-endian numpy types
NUMBER_TYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2",
                "INT32": "<i4", "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4",
                "UINT64": "<u8"}
BYTES = "BYTES"
HEADER = "inference-header-content-length"


class V2InputParameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, Scalar]
    binary_data_size: None = Field(None, description="Binary tensor data: only in a body with an "
                                                     "Inference-Header-Content-Length header "
                                                     "(the binary_tensor_data extension).")


class V2OutputParameters(BaseModel):
    """A requested output's parameters."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, Scalar]
    binary_data: Optional[bool] = Field(None, description="true: this output as binary tensor "
                                                          "data [default: binary_data_output].")
    classification: None = Field(None, description="The classification extension is not "
                                                   "supported.")


def layout(data: Any) -> str:
    """A tensor's data is nested (one list per row) when it holds a list, else flat."""
    return "nested" if isinstance(data, list) and any(isinstance(v, list) for v in data) else "flat"


class V2InferInput(Body):
    """The input tensor "features": N rows of the model's features (GET /model "features")."""

    # v2_request gives `shape` and `data` the model's features and rows

    name: Literal[MATRIX] = Field(description="The model's features, all of them.")
    shape: tuple[int, int]
    datatype: Literal["FP32", "FP64"] = Field(description="FP32 (FP64 is taken too and cast to "
                                                          "FP32).")
    parameters: Optional[V2InputParameters] = None
    data: list[Any]

    @model_validator(mode="after")
    def _data_fits_shape(self) -> V2InferInput:
        how, (rows, width) = layout(self.data), self.shape
        if len(self.data) != (rows if how == "nested" else rows * width):
            raise PydanticCustomError("request", data_size(how, len(self.data), self.shape))
        return self


class V2FeatureInput(Body):
    """One feature's column: named by the feature, shape [N] or [N, 1], N values (flat)."""

    # v2_request gives `name`, `shape`, `datatype` and `data` the feature's kind and the rows

    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[V2InputParameters] = None
    data: list[Any]

    @model_validator(mode="after")
    def _data_fits_shape(self) -> V2FeatureInput:
        if len(self.data) != self.shape[0]:
            raise PydanticCustomError("request", f"input {self.name!r}: data has {len(self.data)} "
                                                 f"values; shape {list(self.shape)} needs "
                                                 f"{self.shape[0]}")
        return self


def _utf8(text: str) -> str:
    if not text.isascii():
        try:  # echoed in the answer, which is UTF-8
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError("request", (
                "id is not valid Unicode (it holds an unpaired surrogate escape such as "
                "\\ud800); send an id of plain text")) from None
    return text


class V2InferRequest(Body):
    """An inference request: the input "features", or one input per feature."""

    # v2_request gives `inputs` and `outputs` the model's tensors

    id: Optional[Annotated[str, pydantic.AfterValidator(_utf8)]] = Field(
        None, description="Echoed in the response.")
    parameters: Optional[dict[str, Scalar]] = Field(
        None, description='"binary_data_output": true answers every output as binary tensor data.')
    inputs: list[Any]
    outputs: Optional[list[Any]] = None


def _shape(value: Any, handler) -> Any:
    try:
        return handler(value)
    except pydantic.ValidationError:  # one error, not one per member of the union
        first = value[0] if isinstance(value, list) and value else None
        raise PydanticCustomError("feature_shape", "[N] or [N, 1]", {"rows": first}) from None


def _kind_of(tags: dict[str, str]) -> Callable[[Any], str | None]:
    """The member of the inputs' union a tensor is validated by: its name's kind (None: no such
    input, which the message of the union's error says)."""
    def kind(tensor: Any) -> str | None:
        name = tensor.get("name") if isinstance(tensor, dict) else getattr(tensor, "name", None)
        return tags.get(name) if isinstance(name, str) else None
    return kind


def v2_request(features: Sequence[str], kinds: Sequence[str], *, table: bool, max_rows: int,
               outputs: Sequence[str]) -> type[V2InferRequest]:
    """The request model of a model with these features: its inputs (the "features" tensor, for
    a model of numbers, or one tensor per feature) and outputs, 1 to max_rows rows."""
    n, rows = len(features), whole(ge=1, le=max_rows)
    members, tags = [], {}
    if all(kind == NUMERIC for kind in kinds) and MATRIX not in features:
        members.append(Annotated[_matrix(n, table, max_rows), Tag(MATRIX)])
        tags[MATRIX] = MATRIX
    array = Field(strict=False)  # a JSON array is a tuple (its items stay strict)
    shape = Annotated[Union[Annotated[tuple[rows], array],
                            Annotated[tuple[rows, Annotated[Literal[1], WHOLE]], array]],
                      Field(description=f"[N] or [N, 1]: N rows, 1 to {max_rows} (--max-rows)."),
                      WrapValidator(_shape)]
    for kind, datatypes, what in ((NUMERIC, tuple(NUMBER_TYPES), "numbers"),
                                  (CATEGORICAL, (BYTES,), "text")):
        names = [f for f, k in zip(features, kinds) if k == kind]
        if not names:
            continue
        tags.update(dict.fromkeys(names, kind))
        empty = " or null (empty)" if table else ""
        members.append(Annotated[create_model(
            f"V2{kind.title()}Input", __base__=V2FeatureInput, __doc__=(
                f"One {kind} feature's column: N {what}{empty}."),
            name=(Literal[tuple(names)], Field(description=f"A {kind} feature.")),
            shape=(shape, ...),
            datatype=(Literal[datatypes], Field(description=" or ".join(datatypes[:3])
                                                + (", INT*, UINT*" if len(datatypes) > 1 else ""))),
            data=(Annotated[list[value_type(kind, table)], Field(min_length=1, max_length=max_rows)],
                  ...)),
            Tag(kind)])
    tensor = (members[0].__origin__ if len(members) == 1 else Annotated[
        Union[tuple(members)], Discriminator(_kind_of(tags))])
    wanted = create_model("V2RequestedOutput", __base__=Body,
                          name=(Literal[tuple(outputs)], Field(description=" or ".join(
                              f'"{o}"' for o in outputs) + ".")),
                          parameters=(Optional[V2OutputParameters], None))
    return create_model(
        "V2InferRequest", __base__=V2InferRequest, __doc__=V2InferRequest.__doc__,
        inputs=(Annotated[list[tensor], Field(min_length=1, max_length=max(n, 1))], ...),
        outputs=(Optional[Annotated[list[wanted], Field(max_length=len(outputs))]],
                 Field(None, description="Outputs to return [default: all].")))


def _matrix(n: int, table: bool, max_rows: int) -> type[V2InferInput]:
    width = Annotated[Literal[n], WHOLE]
    shape = Annotated[tuple[whole(ge=1, le=max_rows), width],  # strict=False: a JSON array is a
                      Field(strict=False,                      # tuple (its items stay strict)
                            description=f"[N, {n}]: N rows, 1 to {max_rows} (--max-rows).")]
    number = value_type(NUMERIC, table)
    data = Annotated[Union[
        Annotated[list[number], Field(min_length=n, max_length=max_rows * n), Tag("flat")],
        Annotated[rows_of(row_type([number] * n), max_rows), Tag("nested")]],
        Discriminator(layout),
        Field(description=f"N * {n} numbers, row after row: flat (row-major) or nested as N "
                          f"lists of {n}; N is shape[0].")]
    return create_model("V2InferInput", __base__=V2InferInput, __doc__=V2InferInput.__doc__,
                        shape=(shape, ...), data=(data, ...))


# ---- the binary tensor data extension ----------------------------------------------------------

def split_binary(raw: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """A binary request's JSON header and the bytes after it."""
    if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(raw):
        raise RequestError(f"Inference-Header-Content-Length is {header_length[:20]!r}; it must "
                           f"be the length of the body's JSON header (1 to {len(raw)} bytes)",
                           "malformed")
    size = int(header_length)
    return bytes(raw[:size]), memoryview(raw)[size:]


def decode_binary(body: Any, tail: memoryview, *, max_values: int) -> None:
    """Put the binary data of each input of the parsed JSON header `body` in its "data" (and
    drop its binary_data_size): what a JSON request holds. Checked before anything is decoded:
    each size against its shape and datatype, and all of them against `max_values` and the
    bytes sent."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        return  # the validation of the header says what is wrong
    offset, values = 0, 0
    for i, tensor in enumerate(inputs):
        size = _binary_size(tensor)
        if size is None:
            continue
        count, datatype = _elements(tensor, i), tensor.get("datatype")
        values += count
        if values > max_values:
            raise RequestError(f"the binary inputs hold over {max_values} values, more than a "
                               "request may (--max-rows, --max-values); split the request",
                               "too_large")
        chunk = tail[offset:offset + size]
        if len(chunk) < size:
            raise RequestError(f"inputs[{i}]: binary_data_size {size} runs past the end of the "
                               f"body ({len(tail)} bytes after the JSON header)", "malformed")
        offset += size
        tensor["data"] = _decoded(chunk, datatype, count, i)
        del tensor["parameters"]["binary_data_size"]
    if offset != len(tail):
        raise RequestError(f"the body holds {len(tail) - offset} bytes past its binary inputs; "
                           "Inference-Header-Content-Length and each binary_data_size must add "
                           "up to the body's length", "malformed")


def _binary_size(tensor: Any) -> int | None:
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(f"binary_data_size is {json.dumps(size)[:40]}; send the byte count of "
                           "the input's binary data", "malformed")
    return size


def _elements(tensor: dict, i: int) -> int:
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise RequestError(f"inputs[{i}].shape is {json.dumps(shape)[:40]}; a binary input "
                           "needs its shape as a list of whole numbers", "malformed")
    return int(np.prod(shape, dtype=np.int64)) if len(shape) < 8 else 1 << 62


def _decoded(chunk: memoryview, datatype: Any, count: int, i: int) -> list:
    if datatype == BYTES:
        return _strings(chunk, count, i)
    if datatype not in NUMBER_TYPES:
        raise RequestError(f"inputs[{i}].datatype is {json.dumps(datatype)[:40]}; binary data is "
                           f"read as {', '.join(NUMBER_TYPES)} or BYTES", "malformed")
    dtype = np.dtype(NUMBER_TYPES[datatype])
    if len(chunk) != count * dtype.itemsize:
        raise RequestError(f"inputs[{i}]: binary_data_size is {len(chunk)} bytes; its shape holds "
                           f"{count} {datatype} values, {count * dtype.itemsize} bytes", "malformed")
    return np.frombuffer(chunk, dtype).tolist()


def _strings(chunk: memoryview, count: int, i: int) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length and that many bytes of UTF-8."""
    data, out, at = bytes(chunk), [], 0
    while at < len(data) and len(out) < count:
        if at + 4 > len(data):
            break
        (length,) = struct.unpack_from("<I", data, at)
        text = data[at + 4:at + 4 + length]
        if len(text) < length:
            break
        try:
            out.append(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(f"inputs[{i}]: BYTES element {len(out)} is not UTF-8 text; send "
                               "categories as UTF-8", "malformed") from None
        at += 4 + length
    if len(out) != count or at != len(data):
        raise RequestError(f"inputs[{i}]: its binary data does not hold {count} BYTES elements "
                           "(each a 4-byte little-endian length, then the bytes)", "malformed")
    return out


def binary_outputs(body: V2InferRequest, names: Sequence[str]) -> set[str]:
    """The outputs to answer as binary tensor data."""
    default = (body.parameters or {}).get("binary_data_output") is True
    asked = {o.name: o.parameters.binary_data for o in body.outputs or ()
             if o.parameters is not None and o.parameters.binary_data is not None}
    return {name for name in names if asked.get(name, default)}


def binary_tensor(datatype: str, data: np.ndarray | list[str]) -> bytes:
    """A tensor's binary data: little-endian numbers, or BYTES elements."""
    if datatype == BYTES:
        return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode("utf-8") for s in data))
    return np.ascontiguousarray(data, NUMBER_TYPES[datatype]).tobytes()
