"""What each refusal says. The request contract is stated once, by the pydantic models of
serve/requests.py; here their validation errors (and those of FastAPI's query, path and form
parameters) become one RequestError: one line that names the value at fault, in the request's
own terms (features[3][12], rows[0]['tempo'], inputs[0].data[7]), and says what to send."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from gsearch.serve.errors import RequestError

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest value the model computes with
BINARY = ("binary tensor data (the binary_data extension) is not supported; send \"data\" as JSON "
          "numbers (tritonclient: set_data_from_numpy(..., binary_data=False))")
_LAYOUTS = ("flat", "nested")  # the tags of a tensor's data in pydantic's error locations
ORDER = "in the order of GET /model \"features\""


def too_many_rows(rows: Any, allowed: int) -> RequestError:
    return RequestError(f"{rows} rows is more than the {allowed} allowed (--max-rows); split the "
                        "request", "too_large")


def explain_parameters(errors: list[dict]) -> RequestError:
    """FastAPI's validation errors of a route's parameters (the upload's form, top_k, ...)."""
    if not errors:
        return RequestError("invalid request; see /docs")
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if loc[:2] == ("body", "file") and first.get("type") == "missing":
        return RequestError("no file; upload the audio as multipart/form-data field 'file' "
                            "(curl -F file=@song.wav ...)", "malformed")
    if loc[:2] == ("body", "file"):  # a form field 'file' that is text, not a file (no filename)
        return RequestError("the field 'file' is not a file upload (no filename in its "
                            "Content-Disposition); upload the audio as a file: curl -F "
                            "file=@song.wav ...", "malformed")
    label = where(loc[1:])
    if loc and loc[0] in ("query", "path"):
        label = f"{loc[0]} parameter {label}"
    return RequestError(f"{label}: {_said(first, len(errors))}")


def explain_body(errors: list[dict], data: Any, *, example: str, n_features: int) -> RequestError:
    """The validation errors of a JSON body (`data`, as parsed) as one refusal: the first error,
    an unknown name before the others (it is often their cause: a misspelled feature is also a
    missing one)."""
    if not errors:
        return RequestError("invalid request; see /docs")
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    kind, loc = first["type"], tuple(first["loc"])
    if kind == "request":  # the model's own checks (serve/requests.py): the message as it is
        return RequestError(first["msg"])
    if kind == "one_of":
        return RequestError(f"{first['msg']}: {example}")
    if not loc:
        return RequestError(f"the body must be a JSON object: {example}")
    if kind == "extra_forbidden" and len(loc) == 1:
        return RequestError(f"unknown field {loc[0]!r}; send {example}")
    refusal = None
    if loc[0] in ("features", "rows"):
        refusal = _rows(first, loc, data, errors, n_features)
    elif loc[0] == "inputs":
        refusal = _tensor(first, loc, data, n_features, example)
    elif loc[0] == "outputs" and len(loc) >= 3:
        refusal = _output(first, loc)
    return refusal or RequestError(f"{where(loc)}: {_said(first, len(errors))}")


def _rows(error: dict, loc: tuple, data: Any, errors: list[dict], n: int) -> RequestError | None:
    """POST /predict's `features` and `rows`."""
    kind, field = error["type"], loc[0]
    if len(loc) == 1 and kind == "too_short":
        return RequestError(f"'{field}' is empty; send at least one row")
    if len(loc) == 1 and kind == "too_long":
        return too_many_rows(error["ctx"]["actual_length"], error["ctx"]["max_length"])
    if len(loc) < 2:
        return None
    i = loc[1]
    if field == "features":
        if len(loc) == 3 and _scalar(error):
            return _value(f"features[{i}][{loc[2]}]", error)
        row = _at(data, loc[:2])
        if isinstance(row, list) and len(row) != n:
            return RequestError(f"features[{i}] has {len(row)} numbers; the model takes {n}, "
                                f"{ORDER}")
        return None
    if len(loc) != 3:
        return None
    name = loc[2]
    if kind == "missing":
        missing = sum(e["type"] == "missing" and tuple(e["loc"][:2]) == loc[:2] for e in errors)
        more = f" (and {missing - 1} more)" if missing > 1 else ""
        return RequestError(f"rows[{i}]: missing feature {name!r}{more}; every row needs all "
                            f"{n} features of GET /model")
    if kind == "extra_forbidden":
        return RequestError(f"rows[{i}]: unknown feature {name!r}; the model's features are "
                            "listed by GET /model")
    return _value(f"rows[{i}][{name!r}]", error)


def _tensor(error: dict, loc: tuple, data: Any, n: int, example: str) -> RequestError | None:
    """The Open Inference Protocol's `inputs`: one tensor, "features"."""
    kind = error["type"]
    if (loc == ("inputs",) and kind in ("too_short", "too_long")) or loc[2:] == ("name",):
        tensors = _at(data, ("inputs",)) or []
        names = ", ".join(repr(t.get("name")) for t in tensors if isinstance(t, dict)) or "none"
        return RequestError(f"the model takes one input, 'features' (got {names}); send {example}")
    field = loc[2] if len(loc) > 2 else None
    if field == "shape":
        if loc[3:] == (0,) and kind == "less_than_equal":
            return too_many_rows(error["input"], error["ctx"]["le"])
        return RequestError(f"inputs[0].shape is {_shown(_at(data, loc[:3]))}; the model takes "
                            f"[N, {n}] with N >= 1 rows of features {ORDER}")
    if field == "datatype":
        return RequestError(f"inputs[0].datatype is {error['input']!r}; the model takes FP32 "
                            "(or FP64)")
    if loc[2:4] == ("parameters", "binary_data_size"):
        return RequestError(BINARY)
    return _data(error, loc, data, n) if field == "data" else None


def _data(error: dict, loc: tuple, data: Any, n: int) -> RequestError | None:
    """A tensor's data: flat (N * n numbers) or nested (N lists of n), as its shape says (the
    shape is valid here: its errors come first)."""
    kind, layout, rest = error["type"], loc[3] if len(loc) > 3 else None, loc[4:]
    try:
        rows, width = [int(v) for v in _at(data, ("inputs", 0, "shape"))]
    except (TypeError, ValueError):
        return None
    if not rest and kind in ("too_short", "too_long"):
        return RequestError(data_size(layout, error["ctx"]["actual_length"], [rows, width]))
    if layout == "flat" and len(rest) == 1:
        return _value(f"inputs[0].data[{rest[0]}]", error)
    if layout != "nested" or not rest:
        return None
    i = rest[0]
    if len(rest) == 2 and _scalar(error):
        return _value(f"inputs[0].data[{i}][{rest[1]}]", error)
    row = _at(data, ("inputs", 0, "data", i))
    if not isinstance(row, list):
        what = "not a list"
    elif len(row) != n:
        what = f"a list of {len(row)} values"
    else:
        return None
    return RequestError(f"inputs[0].data is nested but data[{i}] is {what}; {_needs(rows, n)}")


def data_size(layout: str, got: int, shape: tuple | list) -> str:
    """A tensor's data that does not hold the rows its shape says."""
    rows, width = shape
    if layout == "flat":
        return f"inputs[0].data has {got} values; shape {list(shape)} needs {rows * width}"
    return f"inputs[0].data is nested but {got} rows; {_needs(rows, width)}"


def _needs(rows: int, width: int) -> str:
    return (f"shape {[rows, width]} needs {rows} lists of {width} numbers (or {rows * width} "
            "numbers, flat)")


def _output(error: dict, loc: tuple) -> RequestError | None:
    """The Open Inference Protocol's `outputs`: "probabilities" and "label"."""
    if loc[2:] == ("name",):
        return RequestError(f"outputs[{loc[1]}]: no output {error['input']!r}; the model's "
                            "outputs are 'probabilities' and 'label'")
    if loc[2:4] == ("parameters", "classification"):
        return RequestError(f"outputs[{loc[1]}]: the classification extension is not supported; "
                            "ask for 'label' (the most likely genre) or 'probabilities'")
    return None


def _scalar(error: dict) -> bool:
    """Whether the error is about a value in a row, not a list or object where a value should be
    (a row nested too deep: its length is reported instead)."""
    return not isinstance(error.get("input"), (list, dict))


def _value(at: str, error: dict) -> RequestError:
    """A feature value that is not a finite number within float32's range."""
    value = error.get("input")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RequestError(f"{at} is {_shown(value)}, not a finite number within float32's range "
                            f"(±{FLOAT32_MAX:.3g}) that the model computes in; NaN and Infinity "
                            "are refused")
    return RequestError(f"{at} is {_shown(value)}, not a number")


def _shown(value: Any) -> str:
    """A value as the client sent it (JSON), cut to 40 characters."""
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _said(error: dict, count: int) -> str:
    more = f" (and {count - 1} more errors)" if count > 1 else ""
    return error.get("msg", "invalid value") + more


def _at(data: Any, loc: tuple) -> Any:
    """The value of the parsed body at an error's location; None where there is none."""
    for part in loc:
        if part in _LAYOUTS:
            continue
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def where(loc: tuple) -> str:
    """An error's location in the request's terms: features[0][3], rows[2]['tempo'],
    inputs[0].data[7], parameters.priority."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _LAYOUTS and text == "inputs[0].data":
            continue
        elif text.startswith("rows[") or not str(part).isidentifier():  # a client's own name
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"
