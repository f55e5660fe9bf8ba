"""The request contract, stated once, and the one converter every request goes through.

The pydantic models below are the contract: built per app for the model it serves (its features
and their kinds, --max-rows, --max-values), they validate the JSON bodies the routes parse
themselves and are the request schemas of /openapi.json (Contract.schemas), so that the schema
states what the server checks (Schemathesis checks that it does). Their errors become one-line
refusals in serve/messages.py. The value types are serve/values.py's; the Open Inference
Protocol's models and its binary tensor data are serve/v2.py's.

Every request becomes a FeatureBatch through feature_batch: the rows of POST /predict (values in
the model's order, or objects by feature name), the tensors of POST /v2/models/gsearch/infer
(one "features" tensor, or one per feature) and the clip-long windows of an uploaded audio file
(serve/uploads.py). Its columns hold numbers, text or None (empty), by feature name; the model's
own ExportedModel.matrix makes its input of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here before Python 3.12

from gsearch import GsearchError
from gsearch.data.schema import NUMERIC
from gsearch.serve.errors import RequestError
from gsearch.serve.limits import check_json_size
from gsearch.serve.messages import ORDER, explain_body
from gsearch.serve.v2 import (CLASSIFIER_OUTPUTS, MATRIX, REGRESSION_OUTPUTS, V2InferRequest,
                              decode_binary, layout, split_binary, v2_request)
from gsearch.serve.values import Body, Number, row_type, rows_of, value_type, whole

DEFAULT_TOP_K = 3
DEFAULT_MAX_VALUES = 1_000_000  # values (rows x features) in one request, --max-values


# ---- POST /predict ---------------------------------------------------------------------------

class PredictRequest(Body):
    """Feature rows: exactly one of `features` and `rows`."""

    # Contract's subclass gives `features` and `rows` the model's features and rows

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


# ---- the feature batch: every request's rows ---------------------------------------------------

@dataclass(frozen=True)
class FeatureBatch:
    """N rows of the model's features, column by column (feature name -> N values: float32
    numbers, or a list of numbers, text and None where a value is empty), and how the request
    names its rows in messages (`row_label` with the row's index: "features[{}]")."""

    columns: dict[str, np.ndarray | list]
    row_label: str

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values())))

    def matrix(self, model) -> np.ndarray:
        """The model's raw input rows (models.predict.ExportedModel.matrix: its preprocessing
        encodes text and empty cells); a value it cannot take is a RequestError naming it."""
        try:
            return model.matrix(self.columns, where=lambda i, name: (
                f"{self.row_label.format(i)}[{name!r}]"))
        except GsearchError as e:
            raise RequestError(str(e)) from None


def feature_batch(rows: Sequence, features: Sequence[str], row_label: str, *,
                  kinds: Sequence[str] | None = None) -> FeatureBatch:
    """The one converter: validated rows, each a sequence of values in the model's feature order
    or a mapping by feature name, as a FeatureBatch. A column of numbers only is float32 (NaN
    where empty); a categorical one (`kinds`) stays a list."""
    kinds = kinds or (NUMERIC,) * len(features)
    if not isinstance(rows, np.ndarray) and not isinstance(rows[0], Mapping) and all(
            k == NUMERIC for k in kinds):
        numbers = _numbers(rows)   # one C call for rows of numbers only (the common request)
        rows = rows if numbers is None else numbers
    if isinstance(rows, np.ndarray):
        return FeatureBatch({name: rows[:, j] for j, name in enumerate(features)}, row_label)
    if isinstance(rows[0], Mapping):
        columns = {name: [row[name] for row in rows] for name in features}
    else:
        columns = {name: [row[j] for row in rows] for j, name in enumerate(features)}
    return FeatureBatch({name: _column(columns[name], kind) for name, kind in zip(features, kinds)},
                        row_label)


def _numbers(rows: Sequence) -> np.ndarray | None:
    """Rows of numbers as float32 [N, n_features]; None where a row holds anything else (an
    empty value, text, true/false: the columns then say which)."""
    try:
        array = np.asarray(rows)
    except ValueError:
        return None
    return array.astype(np.float32) if array.ndim == 2 and array.dtype.kind in "iuf" else None


def _column(values: list, kind: str) -> np.ndarray | list:
    if kind != NUMERIC:
        return values
    if None in values:
        values = [np.nan if v is None else v for v in values]
    return np.array(values, np.float32)


# ---- the contract of one app -------------------------------------------------------------------

class Contract:
    """The request models of an app serving a model with these features (and kinds; `table`:
    it imputes empty cells; `regression`: it answers numbers), at most `max_rows` rows and
    `max_values` values a request: they validate the bodies and are the schemas of
    /openapi.json."""

    def __init__(self, features: Sequence[str], max_rows: int, *, kinds: Sequence[str] | None = None,
                 table: bool = False, regression: bool = False,
                 max_values: int = DEFAULT_MAX_VALUES):
        self.features = tuple(features)
        self.kinds = tuple(kinds or (NUMERIC,) * len(self.features))
        n = len(self.features)
        self.max_rows = max(1, min(max_rows, max_values // n))  # rows x features <= max_values
        self.max_values = self.max_rows * n  # what one request may hold: its share of the budget
        self.table = table
        self.outputs = REGRESSION_OUTPUTS if regression else CLASSIFIER_OUTPUTS
        self.types = [value_type(kind, table) for kind in self.kinds]
        name = "tempo" if "tempo" in self.features else self.features[0]
        self.rest_example = (f'{{"features": [[{n} values]]}} or '
                             f'{{"rows": [{{"{name}": ..., ...}}]}}')
        self.matrix_input = all(k == NUMERIC for k in self.kinds) and MATRIX not in self.features
        self.v2_example = ('{"inputs": [{"name": "features", "datatype": "FP32", "shape": [N, '
                           f'{n}], "data": [N*{n} numbers, row after row]}}]}}'
                           if self.matrix_input else
                           f'{{"inputs": [{{"name": "{self.features[0]}", "datatype": '
                           f'"{"FP32" if self.kinds[0] == NUMERIC else "BYTES"}", "shape": [N], '
                           f'"data": [N values]}}, ... one input per feature]}}')
        self.rest = _rest_model(self.features, self.types, self.max_rows)
        self.v2 = v2_request(self.features, self.kinds, table=table, max_rows=self.max_rows,
                             outputs=self.outputs)

    def schemas(self) -> dict[str, dict]:
        """The JSON schemas of the request bodies and the models they hold, by name, for
        /openapi.json's components."""
        _, top = models_json_schema([(self.rest, "validation"), (self.v2, "validation")],
                                    ref_template="#/components/schemas/{model}")
        return top["$defs"]

    def predict_request(self, raw: bytes, content_type: str) -> tuple[FeatureBatch, int]:
        """POST /predict's body as a FeatureBatch and its top_k; RequestError otherwise."""
        data = self._parsed(raw, content_type, self.rest_example)
        body = self._validated(data, self.rest, self.rest_example)
        top_k = body.top_k or DEFAULT_TOP_K
        if body.features is not None:
            return self._batch(body.features, "features[{}]"), top_k
        return self._batch(body.rows, "rows[{}]"), top_k

    def infer_request(self, raw: bytes, content_type: str,
                      header_length: str | None = None) -> tuple[FeatureBatch, V2InferRequest]:
        """POST /v2/models/gsearch/infer's body (binary tensor data: its JSON header is the first
        `header_length` bytes): its tensors as a FeatureBatch, and the request."""
        if header_length is None:
            data = self._parsed(raw, content_type, self.v2_example)
        else:
            header, tail = split_binary(raw, header_length)
            data = self._parsed(header, "", self.v2_example)
            decode_binary(data, tail, max_values=self.max_values)
        body = self._validated(data, self.v2, self.v2_example)
        tensors = body.inputs
        if tensors[0].name == MATRIX and self.matrix_input:
            if len(tensors) > 1:
                raise RequestError(f"the input 'features' holds every feature; send it alone, or "
                                   f"one input per feature (got {len(tensors)} inputs)")
            return self._batch(_nested(tensors[0]), "inputs[0]: row {}"), body
        return self._columns(tensors), body

    def _columns(self, tensors: list) -> FeatureBatch:
        """One tensor per feature (validated: each a feature's) as a FeatureBatch."""
        at = {}
        for i, tensor in enumerate(tensors):
            if tensor.name == MATRIX and self.matrix_input:
                raise RequestError(f"inputs[{i}] is 'features', which holds every feature; send "
                                   "it alone, or one input per feature")
            if tensor.name in at:
                raise RequestError(f"inputs[{i}]: feature {tensor.name!r} is also inputs"
                                   f"[{at[tensor.name]}]; send each feature once")
            at[tensor.name] = i
        missing = [name for name in self.features if name not in at]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise RequestError(f"no input for feature {missing[0]!r}{more}; send one input per "
                               f"feature of GET /v2/models/gsearch ({len(self.features)})")
        n = tensors[0].shape[0]
        for i, tensor in enumerate(tensors):
            if tensor.shape[0] != n:
                raise RequestError(f"inputs[{i}] ({tensor.name!r}) holds {tensor.shape[0]} rows "
                                   f"and inputs[0] {n}; every input holds the same N rows")
        columns = {name: _column(tensors[at[name]].data, kind)
                   for name, kind in zip(self.features, self.kinds)}
        return FeatureBatch(columns, "row {}")

    def _batch(self, rows: Any, label: str) -> FeatureBatch:
        return feature_batch(rows, self.features, label, kinds=self.kinds)

    def _parsed(self, raw: bytes, content_type: str, example: str) -> Any:
        return parse_json(raw, content_type, example=example, max_rows=self.max_rows,
                          n_features=len(self.features))

    def _validated(self, data: Any, model: type[BaseModel], example: str):
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as e:
            raise explain_body(e.errors(), data, example=example, features=self.features,
                               kinds=self.kinds, table=self.table,
                               max_rows=self.max_rows) from None


def _nested(tensor) -> Any:
    """The rows of the "features" tensor: its data as it is when nested, else cut in rows."""
    data, (rows, width) = tensor.data, tensor.shape
    if layout(data) == "nested":
        return data
    if None not in data:
        return np.reshape(np.asarray(data, np.float32), (rows, width))
    return [data[r * width:(r + 1) * width] for r in range(rows)]


def _rest_model(features: tuple[str, ...], types: list, max_rows: int) -> type[PredictRequest]:
    n = len(features)
    named = TypedDict("PredictRow", dict(zip(features, types)))
    named.__pydantic_config__ = ConfigDict(extra="forbid")
    return create_model(
        "PredictRequest", __base__=PredictRequest,
        __doc__=(f"Feature rows: exactly one of `features` (rows of values {ORDER}) and `rows` "
                 f"(objects keyed by feature name); 1 to {max_rows} rows (--max-rows, "
                 "--max-values)."),
        features=(Optional[rows_of(row_type(types), max_rows)], Field(
            None, description=f"Rows of {n} values {ORDER}.")),
        rows=(Optional[rows_of(named, max_rows)], Field(
            None, description="Rows as {feature name: value}: every feature of the model "
                              "(GET /model \"features\"), no others.")))


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
