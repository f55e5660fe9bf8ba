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
_LAYOUTS = ("flat", "nested")  # the tags of a tensor's data in pydantic's error locations
_INPUTS = ("features", "numeric", "categorical")  # the tags of an input tensor's kind
ORDER = "in the order of GET /model \"features\""


def too_many_rows(rows: Any, allowed: int) -> RequestError:
    return RequestError(f"{rows} rows is more than the {allowed} allowed (--max-rows; --max-values "
                        "over the model's features); split the request", "too_large")


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


def explain_body(errors: list[dict], data: Any, *, example: str, features: tuple[str, ...],
                 kinds: tuple[str, ...], table: bool, max_rows: int) -> RequestError:
    """The validation errors of a JSON body (`data`, as parsed) as one refusal: the first error,
    an unknown name before the others (it is often their cause: a misspelled feature is also a
    missing one)."""
    if not errors:
        return RequestError("invalid request; see /docs")
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    kind, loc = first["type"], _untagged(tuple(first["loc"]))
    first = {**first, "kind": dict(zip(features, kinds)), "table": table, "max_rows": max_rows}
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
        refusal = _rows(first, loc, data, errors, features)
    elif loc[0] == "inputs":
        refusal = _tensor(first, loc, data, features, example)
    elif loc[0] == "outputs" and len(loc) >= 3:
        refusal = _output(first, loc)
    return refusal or RequestError(f"{where(loc)}: {_said(first, len(errors))}")


def _untagged(loc: tuple) -> tuple:
    """An error's location without the tag pydantic gives an input tensor's kind."""
    return loc[:2] + loc[3:] if loc[:1] == ("inputs",) and loc[2:3] in [(t,) for t in _INPUTS] else loc


def _rows(error: dict, loc: tuple, data: Any, errors: list[dict],
          features: tuple[str, ...]) -> RequestError | None:
    """POST /predict's `features` and `rows`."""
    kind, field, n = error["type"], loc[0], len(features)
    if len(loc) == 1 and kind == "too_short":
        return RequestError(f"'{field}' is empty; send at least one row")
    if len(loc) == 1 and kind == "too_long":
        return too_many_rows(error["ctx"]["actual_length"], error["ctx"]["max_length"])
    if len(loc) < 2:
        return None
    i = loc[1]
    if field == "features":
        if len(loc) == 3 and _scalar(error):
            return _value(f"features[{i}][{loc[2]}]", error, features[loc[2]])
        row = _at(data, loc[:2])
        if isinstance(row, list) and len(row) != n:
            what = "numbers" if set(error["kind"].values()) == {"numeric"} else "values"
            return RequestError(f"features[{i}] has {len(row)} {what}; the model takes {n}, "
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
    return _value(f"rows[{i}][{name!r}]", error, name)


def _tensor(error: dict, loc: tuple, data: Any, features: tuple[str, ...],
            example: str) -> RequestError | None:
    """The Open Inference Protocol's `inputs`: the tensor "features", or one per feature."""
    kind, n = error["type"], len(features)
    if ((loc == ("inputs",) and kind in ("too_short", "too_long")) or loc[2:] == ("name",)
            or (len(loc) == 2 and kind.startswith("union_tag"))):
        tensors = _at(data, ("inputs",)) or []
        names = ", ".join(repr(t.get("name")) for t in tensors if isinstance(t, dict)) or "none"
        takes = ("one input, 'features', or one input per feature"
                 if "features" not in error["kind"] and set(error["kind"].values()) == {"numeric"}
                 else "one input per feature")
        return RequestError(f"the model takes {takes} (got {names}); send {example}")
    if len(loc) < 3:
        return None
    i, field = loc[1], loc[2]
    name = _at(data, ("inputs", i, "name"))
    if name in error["kind"]:
        return _column(error, loc, name, error["kind"][name])
    if field == "shape":
        if loc[3:] == (0,) and kind == "less_than_equal":
            return too_many_rows(error["input"], error["ctx"]["le"])
        return RequestError(f"inputs[{i}].shape is {_shown(_at(data, loc[:3]))}; the model takes "
                            f"[N, {n}] with N >= 1 rows of features {ORDER}")
    if field == "datatype":
        return RequestError(f"inputs[{i}].datatype is {error['input']!r}; the model takes FP32 "
                            "(or FP64)")
    return _data(error, loc, data, n) if field == "data" else _parameters(error, loc)


def _parameters(error: dict, loc: tuple) -> RequestError | None:
    if loc[2:4] == ("parameters", "binary_data_size"):
        return RequestError(f"inputs[{loc[1]}].parameters.binary_data_size: binary tensor data "
                            "needs an Inference-Header-Content-Length header (the length of the "
                            "body's JSON part); without it send \"data\" as JSON")
    return None


def _column(error: dict, loc: tuple, name: str, kind: str) -> RequestError | None:
    """A feature's own input tensor (shape [N] or [N, 1], flat data)."""
    i, field = loc[1], loc[2]
    if field == "shape":
        rows, allowed = (error.get("ctx") or {}).get("rows"), error.get("max_rows")
        if isinstance(rows, int) and not isinstance(rows, bool) and rows > (allowed or rows):
            return too_many_rows(rows, allowed)
        return RequestError(f"inputs[{i}].shape is {_shown(error['input'])}; input {name!r} takes "
                            "[N] or [N, 1] with N >= 1 rows")
    if field == "datatype":
        send = "BYTES (text)" if kind == "categorical" else "FP32, FP64, FP16, INT* or UINT*"
        return RequestError(f"inputs[{i}].datatype is {_shown(error['input'])}; feature {name!r} "
                            f"is {kind}: send {send}")
    if field == "data" and len(loc) == 3 and error["type"] == "too_long":
        return too_many_rows(error["ctx"]["actual_length"], error["ctx"]["max_length"])
    if field == "data" and len(loc) == 4:
        return _value(f"inputs[{i}].data[{loc[3]}]", error, name)
    return _parameters(error, loc)


def _data(error: dict, loc: tuple, data: Any, n: int) -> RequestError | None:
    """A tensor's data: flat (N * n numbers) or nested (N lists of n), as its shape says (the
    shape is valid here: its errors come first)."""
    kind, layout, rest, at = error["type"], loc[3] if len(loc) > 3 else None, loc[4:], loc[1]
    try:
        rows, width = [int(v) for v in _at(data, ("inputs", at, "shape"))]
    except (TypeError, ValueError):
        return None
    if not rest and kind in ("too_short", "too_long"):
        return RequestError(data_size(layout, error["ctx"]["actual_length"], [rows, width]))
    if layout == "flat" and len(rest) == 1:
        return _value(f"inputs[{at}].data[{rest[0]}]", error)
    if layout != "nested" or not rest:
        return None
    i = rest[0]
    if len(rest) == 2 and _scalar(error):
        return _value(f"inputs[{at}].data[{i}][{rest[1]}]", error)
    row = _at(data, ("inputs", at, "data", i))
    if not isinstance(row, list):
        what = "not a list"
    elif len(row) != n:
        what = f"a list of {len(row)} values"
    else:
        return None
    return RequestError(f"inputs[{at}].data is nested but data[{i}] is {what}; {_needs(rows, n)}")


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
    """The Open Inference Protocol's `outputs`: a classifier's "probabilities" and "label", a
    regression's "prediction"."""
    if loc[2:] == ("name",):
        outputs = (error.get("ctx") or {}).get("expected", "'probabilities' or 'label'")
        return RequestError(f"outputs[{loc[1]}]: no output {error['input']!r}; the model's "
                            f"outputs are {outputs.replace(' or ', ' and ')}")
    if loc[2:4] == ("parameters", "classification"):
        return RequestError(f"outputs[{loc[1]}]: the classification extension is not supported; "
                            "ask for 'label' (the most likely genre) or 'probabilities'")
    return None


def _scalar(error: dict) -> bool:
    """Whether the error is about a value in a row, not a list or object where a value should be
    (a row nested too deep: its length is reported instead)."""
    return not isinstance(error.get("input"), (list, dict))


def _value(at: str, error: dict, feature: str | None = None) -> RequestError:
    """A feature value the model does not take: a categorical feature's that is not text, a
    number or null, a numeric feature's that is not a finite number within float32's range."""
    value = error.get("input")
    if error["type"] == "category":
        return RequestError(f"{at} is {_shown(value)}; feature {feature!r} is categorical: send "
                            "text, a number (taken as text) or null (empty)")
    if value is None:
        return RequestError(f"{at} is null; this model takes no empty values (it was trained on "
                            "numbers only): send a number")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RequestError(f"{at} is {_shown(value)}, not a finite number within float32's range "
                            f"(±{FLOAT32_MAX:.3g}) that the model computes in; NaN and Infinity "
                            "are refused")
    named = f" (feature {feature!r} is numeric)" if feature is not None else ""
    empty = " or null (empty)" if error.get("table") else ""
    return RequestError(f"{at} is {_shown(value)}, not a number{named}; send a number{empty}")


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
