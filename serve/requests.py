"""The request contract, stated once, and the one converter every request goes through.

The pydantic models below are the contract: built per app for the model it serves (its features,
--max-rows), they validate the JSON bodies the routes parse themselves and are the request
schemas of /openapi.json (Contract.schemas), so that the schema states what the server checks
(Schemathesis checks that it does). Their errors become one-line refusals in serve/messages.py.

Every request becomes a FeatureBatch through feature_batch: the rows of POST /predict (numbers in
the model's order, or objects by feature name), the tensor of POST /v2/models/gsearch/infer (flat
or nested) and the clip-long windows of an uploaded audio file (serve/uploads.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Optional, Sequence, Union

import numpy as np
import pydantic
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      WrapValidator, create_model, model_validator)
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here before Python 3.12

from gsearch.serve.errors import RequestError
from gsearch.serve.limits import check_json_size
from gsearch.serve.messages import FLOAT32_MAX, ORDER, data_size, explain_body

DEFAULT_TOP_K = 3
V2_MODEL = "gsearch"  # the model's name in the Open Inference Protocol routes (/v2/models/gsearch)
V2_OUTPUTS = ("probabilities", "label")

# A feature value: a finite number the model can compute with (float32's range)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(**bounds) -> Any:
    """A JSON integer: 3, and also 3.0 (the same number in JSON and in JSON Schema's "integer")."""
    return Annotated[int, Field(strict=True, **bounds), BeforeValidator(_whole)]


def _scalar(value: Any, handler) -> Any:
    try:
        return handler(value)
    except pydantic.ValidationError:
        raise ValueError("a parameter is a string, a number or true/false") from None


Scalar = Annotated[Union[str, float, bool], WrapValidator(_scalar)]  # the protocol's $parameters


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# ---- POST /predict ---------------------------------------------------------------------------

class PredictRequest(_Body):
    """Feature rows: exactly one of `features` and `rows`."""

    # Contract's subclass gives `features` and `rows` the model's features and --max-rows

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["features"], "properties": {"features": {"type": "array"}}},
        {"required": ["rows"], "properties": {"rows": {"type": "array"}}}]})
    features: Optional[list[list[Number]]] = None
    rows: Optional[list[dict[str, Number]]] = None
    top_k: Optional[whole(ge=1)] = Field(None, description="Genres in each `top_k` list "
                                                           f"[default {DEFAULT_TOP_K}].")

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        # an unknown field is left to the fields' own check (its message names it)
        if (isinstance(data, dict) and data.keys() <= cls.model_fields.keys()
                and (data.get("features") is None) == (data.get("rows") is None)):
            raise PydanticCustomError("one_of", "send exactly one of 'features' and 'rows'")
        return data


# ---- POST /v2/models/gsearch/infer (the Open Inference Protocol) ----------------------------

class V2InputParameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, Scalar]
    binary_data_size: None = Field(None, description="Binary tensor data (the binary_data "
                                                     "extension) is not supported.")


class V2OutputParameters(BaseModel):
    """A requested output's parameters: "binary_data" is ignored (outputs are always JSON)."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, Scalar]
    classification: None = Field(None, description="The classification extension is not "
                                                   "supported.")


class V2RequestedOutput(_Body):
    name: Literal[V2_OUTPUTS] = Field(description='"probabilities" or "label".')
    parameters: Optional[V2OutputParameters] = None


def _layout(data: Any) -> str:
    """A tensor's data is nested (one list per row) when it holds a list, else flat."""
    return "nested" if isinstance(data, list) and any(isinstance(v, list) for v in data) else "flat"


class V2InferInput(_Body):
    """The input tensor, "features": N rows of the model's features (GET /model "features")."""

    # Contract's subclass gives `shape` and `data` the model's features and --max-rows

    name: Literal["features"] = Field(description="The model's only input.")
    shape: tuple[int, int]
    datatype: Literal["FP32", "FP64"] = Field(description="FP32 (FP64 is taken too and cast to "
                                                          "FP32).")
    parameters: Optional[V2InputParameters] = None
    data: list[Any]

    @model_validator(mode="after")
    def _data_fits_shape(self) -> V2InferInput:
        layout, (rows, width) = _layout(self.data), self.shape
        if len(self.data) != (rows if layout == "nested" else rows * width):
            raise PydanticCustomError("request", data_size(layout, len(self.data), self.shape))
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


class V2InferRequest(_Body):
    """An inference request: one input tensor, "features"."""

    # Contract's subclass gives `inputs` the model's tensor

    id: Optional[Annotated[str, pydantic.AfterValidator(_utf8)]] = Field(
        None, description="Echoed in the response.")
    parameters: Optional[dict[str, Scalar]] = Field(
        None, description='"binary_data_output" is ignored: outputs are always JSON.')
    inputs: list[V2InferInput]
    outputs: Optional[Annotated[list[V2RequestedOutput], Field(max_length=len(V2_OUTPUTS))]] = (
        Field(None, description="Outputs to return [default: both]."))


# ---- the feature batch: every request's rows ---------------------------------------------------

@dataclass(frozen=True)
class FeatureBatch:
    """N rows of the model's features, column by column (feature name -> N values), and how the
    request names its rows in messages (`row_label` with the row's index: "features[{}]").

    Today every column holds float32 numbers. It is a column by name so that a column may later
    hold text or null (categorical features, missing values), which the model's own
    preprocessing encodes by feature name."""

    columns: dict[str, np.ndarray]
    row_label: str

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values())))

    def matrix(self, features: Sequence[str]) -> np.ndarray:
        """The numbers as float32 [N, n_features], in the order of `features`."""
        return np.column_stack([self.columns[name] for name in features]).astype(np.float32)


def feature_batch(rows: Sequence, features: Sequence[str], row_label: str) -> FeatureBatch:
    """The one converter: validated rows, each a sequence of numbers in the model's feature order
    or a mapping by feature name, as a FeatureBatch."""
    if isinstance(rows[0], Mapping):
        columns = {name: np.array([row[name] for row in rows], np.float32) for name in features}
    else:
        X = np.asarray(rows, np.float32)
        columns = {name: X[:, j] for j, name in enumerate(features)}
    return FeatureBatch(columns, row_label)


# ---- the contract of one app -------------------------------------------------------------------

class Contract:
    """The request models of an app serving a model with these features, at most `max_rows`
    rows a request: they validate the bodies and are the schemas of /openapi.json."""

    def __init__(self, features: Sequence[str], max_rows: int):
        self.features, self.max_rows = tuple(features), max_rows
        n = len(self.features)
        name = "tempo" if "tempo" in self.features else self.features[0]
        self.rest_example = (f'{{"features": [[{n} numbers]]}} or '
                             f'{{"rows": [{{"{name}": 120.0, ...}}]}}')
        self.v2_example = ('{"inputs": [{"name": "features", "datatype": "FP32", "shape": [N, '
                           f'{n}], "data": [N*{n} numbers, row after row]}}]}}')
        self.rest = _rest_model(self.features, max_rows)
        self.v2 = _v2_model(n, max_rows)

    def schemas(self) -> dict[str, dict]:
        """The JSON schemas of the request bodies and the models they hold, by name, for
        /openapi.json's components."""
        _, top = models_json_schema([(self.rest, "validation"), (self.v2, "validation")],
                                    ref_template="#/components/schemas/{model}")
        return top["$defs"]

    def predict_request(self, raw: bytes, content_type: str) -> tuple[FeatureBatch, int]:
        """POST /predict's body as a FeatureBatch and its top_k; RequestError otherwise."""
        body = self._validated(raw, content_type, self.rest, self.rest_example)
        top_k = body.top_k or DEFAULT_TOP_K
        if body.features is not None:
            return feature_batch(body.features, self.features, "features[{}]"), top_k
        return feature_batch(body.rows, self.features, "rows[{}]"), top_k

    def infer_request(self, raw: bytes, content_type: str) -> tuple[FeatureBatch, V2InferRequest]:
        """POST /v2/models/gsearch/infer's body: its tensor as a FeatureBatch, and the request."""
        body = self._validated(raw, content_type, self.v2, self.v2_example)
        tensor = body.inputs[0]
        rows = tensor.data if _layout(tensor.data) == "nested" else np.reshape(tensor.data,
                                                                                tensor.shape)
        return feature_batch(rows, self.features, "inputs[0]: row {}"), body

    def _validated(self, raw: bytes, content_type: str, model: type[BaseModel], example: str):
        data = parse_json(raw, content_type, example=example, max_rows=self.max_rows,
                          n_features=len(self.features))
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as e:
            raise explain_body(e.errors(), data, example=example,
                               n_features=len(self.features)) from None


def _rest_model(features: tuple[str, ...], max_rows: int) -> type[PredictRequest]:
    n = len(features)
    named = TypedDict("PredictRow", dict.fromkeys(features, Number))
    named.__pydantic_config__ = ConfigDict(extra="forbid")
    return create_model(
        "PredictRequest", __base__=PredictRequest,
        __doc__=(f"Feature rows: exactly one of `features` (rows of numbers {ORDER}) and `rows` "
                 f"(objects keyed by feature name); 1 to {max_rows} rows (--max-rows)."),
        features=(Optional[_rows(_row(n), max_rows)], Field(
            None, description=f"Rows of {n} numbers {ORDER}.")),
        rows=(Optional[_rows(named, max_rows)], Field(
            None, description=f"Rows as {{feature name: value}}: every feature of the model "
                              "(GET /model \"features\"), no others.")))


def _v2_model(n: int, max_rows: int) -> type[V2InferRequest]:
    width = Annotated[Literal[n], BeforeValidator(_whole)]
    shape = Annotated[tuple[whole(ge=1, le=max_rows), width],  # strict=False: a JSON array is a
                      Field(strict=False,                      # tuple (its items stay strict)
                            description=f"[N, {n}]: N rows, 1 to {max_rows} (--max-rows).")]
    data = Annotated[Union[
        Annotated[list[Number], Field(min_length=n, max_length=max_rows * n), Tag("flat")],
        Annotated[_rows(_row(n), max_rows), Tag("nested")]],
        Discriminator(_layout),
        Field(description=f"N * {n} numbers, row after row: flat (row-major) or nested as N "
                          f"lists of {n}; N is shape[0].")]
    tensor = create_model("V2InferInput", __base__=V2InferInput, __doc__=V2InferInput.__doc__,
                          shape=(shape, ...), data=(data, ...))
    return create_model("V2InferRequest", __base__=V2InferRequest, __doc__=V2InferRequest.__doc__,
                        inputs=(Annotated[list[tensor], Field(min_length=1, max_length=1)], ...))


def _row(n: int) -> Any:
    """A row of the model's n features, by position."""
    return Annotated[list[Number], Field(min_length=n, max_length=n)]


def _rows(item: Any, max_rows: int) -> Any:
    """1 to --max-rows rows."""
    return Annotated[list[item], Field(min_length=1, max_length=max_rows)]


# ---- JSON bodies -------------------------------------------------------------------------------

def parse_json(raw: bytes, content_type: str, *, example: str, max_rows: int,
               n_features: int) -> Any:
    """The JSON body `raw` (sent as `content_type`) parsed; RequestError otherwise. Its size is
    bounded from its bytes (nesting, rows, values: limits.check_json_size) before it is parsed."""
    if not raw:
        raise RequestError(f"empty body; send {example}", "malformed")
    kind = content_type.split(";")[0].strip().lower()
    if kind and not (kind == "application/json" or kind.endswith("+json")):
        raise RequestError(f"the body was sent as {kind}; send JSON with Content-Type: "
                           f"application/json (curl -H 'Content-Type: application/json' ...): "
                           f"{example}", "media_type")
    check_json_size(raw, max_rows=max_rows, n_features=n_features, example=example)
    try:
        # Python callbacks for the numbers: the parse lets go of the GIL at each of them (one C
        # call over a 10 MB body would hold every other thread, /health's event loop included)
        return json.loads(raw, parse_float=_parse_float, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise RequestError(f"the body could not be read as JSON (not UTF-8); send {example}",
                           "malformed") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           f"send {example}", "malformed") from None
    except ValueError as e:  # an integer of more digits than Python converts (4300)
        reason = str(e).split(";")[0]
        raise RequestError(f"the body could not be read as JSON ({reason}); send {example}",
                           "malformed") from None


def _parse_float(text: str) -> float:
    return float(text)


def _parse_int(text: str) -> int:
    return int(text)
