"""The values a request may hold, as pydantic types (their JSON Schema is /openapi.json's):
a feature's value by its kind, whole numbers, the protocol's parameters, lists of rows.

- a numeric feature of a model with preprocessing (a table's: data.encode): a finite float32
  number or null (an empty cell, imputed by the model; NaN is taken as null);
- a numeric feature of a model without it (GTZAN's gsearch-mlp/1): a finite float32 number;
- a categorical feature: text, a number (taken as text) or null; an unknown category goes to
  the model's "other" slot, never an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Sequence, Union

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WrapValidator
from pydantic_core import PydanticCustomError

from gsearch.data.schema import CATEGORICAL
from gsearch.serve.messages import FLOAT32_MAX

# A feature value: a finite number the model can compute with (float32's range)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Text = Annotated[str, Field(strict=True)]


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WHOLE = BeforeValidator(_whole)


def whole(**bounds) -> Any:
    """A JSON integer: 3, and also 3.0 (the same number in JSON and in JSON Schema's "integer")."""
    return Annotated[int, Field(strict=True, **bounds), WHOLE]


def _scalar(value: Any, handler) -> Any:
    try:
        return handler(value)
    except pydantic.ValidationError:
        raise ValueError("a parameter is a string, a number or true/false") from None


Scalar = Annotated[Union[str, float, bool], WrapValidator(_scalar)]  # the protocol's $parameters


def _category(value: Any, handler) -> Any:
    try:
        return handler(value)
    except pydantic.ValidationError:  # one error, not one per member of the union
        raise PydanticCustomError("category", "text, a number or null") from None


# A categorical feature's value: text, a number (taken as text) or null (empty)
Category = Annotated[Optional[Union[Text, Number]], WrapValidator(_category)]


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def _nan_is_empty(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


# A numeric feature's value where the model imputes empty cells: NaN (what numpy clients send
# for one, JSON's NaN or binary data) is null
Imputed = Annotated[Optional[Number], BeforeValidator(_nan_is_empty)]


def value_type(kind: str, table: bool) -> Any:
    """The type of a feature's value: by its kind, and whether the model imputes empty cells
    (`table`: it has preprocessing)."""
    if kind == CATEGORICAL:
        return Category
    return Imputed if table else Number


def row_type(types: Sequence[Any]) -> Any:
    """A row of the model's features by position: n values of one type, or a tuple of them."""
    if all(t == types[0] for t in types):
        return Annotated[list[types[0]], Field(min_length=len(types), max_length=len(types))]
    return Annotated[tuple[tuple(types)], Field(strict=False)]  # a JSON array is a tuple


def rows_of(item: Any, max_rows: int) -> Any:
    """1 to max_rows rows."""
    return Annotated[list[item], Field(min_length=1, max_length=max_rows)]
