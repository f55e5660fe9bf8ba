"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

gsearch serve's OpenAPI schema states what the server checks, but three rules of its contract
cannot be written in JSON Schema; here they are, each narrowly:

- POST /v2/models/gsearch/infer: `data` holds shape[0] rows (N x n_features numbers, or N values
  of a feature's own tensor). A schema-valid request generated with another N is made consistent
  (shape[0] set from data) before it is sent, so such requests are answered and their answers
  checked.
- POST /v2/models/gsearch/infer with one input per feature: every feature once, all of the same
  N rows (a JSON Schema cannot say "each name once, all of them"); a schema-valid request that
  is not is refused with the server's own message (INPUTS below).
- POST /predict and /v2/models/gsearch/infer: finite float32 values far outside the training data
  can overflow the network; the server refuses that row with its own one-line message ("the
  model's output overflows"), which depends on the model's weights, not on the request's shape.
- POST /predict/audio: the upload must be a decodable audio file of a sane length and sample rate,
  which no schema can say of a byte string; a schema-valid upload refused for its content (413
  or 422 naming the upload) is expected.

Every other answer is checked as schemathesis checks it.
"""

import copy

import schemathesis

INFER = "/v2/models/{name}/infer"
OVERFLOW = "the model's output overflows for these values"
INPUTS = ("no input for feature", "which holds every feature", "holds every feature; send it",
          "send each feature once", "every input holds the same N rows")


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if (case.operation.path != INFER or meta is None or not meta.generation.mode.is_positive
            or not isinstance(case.body, dict)):
        return case
    body = copy.deepcopy(case.body)  # generated cases may share their lists
    for tensor in body.get("inputs") or ():
        try:
            data, shape = tensor["data"], tensor["shape"]
            if len(shape) == 1 or shape[1] == 1 and tensor["name"] != "features":
                if data:
                    shape[0] = len(data)  # a feature's own tensor: N values
                continue
            n_features = shape[1]
        except (KeyError, IndexError, TypeError):
            continue
        if data and all(isinstance(row, list) for row in data):
            shape[0] = len(data)  # nested: one list per row
        elif data and len(data) >= n_features:
            rows = len(data) // n_features
            del data[rows * n_features:]
            shape[0] = rows
    case.body = body
    return case


def _error(response) -> str:
    try:
        return str(response.json().get("error", ""))
    except (ValueError, AttributeError):
        return ""


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """False (dropped) only for the refusals the module docstring lists."""
    if failure.code != "ST202":  # a schema-valid request refused
        return True
    error = _error(response)
    if case.operation.path in ("/predict", INFER) and OVERFLOW in error:
        return False
    if case.operation.path == INFER and any(words in error for words in INPUTS):
        return False
    if (case.operation.path == "/predict/audio" and response.status_code in (413, 422)
            and not error.startswith("query parameter")):
        return False
    return True
