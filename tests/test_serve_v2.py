"""gsearch serve's Open Inference Protocol (KServe v2) routes, spoken to by a real client:
Triton's `tritonclient[http]` (pinned in requirements-dev.txt for this test only) against a real
`gsearch serve` process on 127.0.0.1 serving an export made by the tests (conftest's
real_export), started as tests/test_serve.py starts it (same limits: MAX_MB, MAX_ROWS)."""

import http.client
import json

import numpy as np
import pandas as pd
import pytest

from conftest import GTZAN_CSV, require_module
from gsearch.models.predict import ExportedModel
from test_serve import MAX_MB, MAX_ROWS, Server, assert_error

MODEL = "gsearch"


@pytest.fixture(scope="module")
def triton():
    triton = require_module("tritonclient.http", "needs tritonclient[http]")
    triton.Error = require_module("tritonclient.utils", "needs tritonclient").InferenceServerException
    return triton


@pytest.fixture(scope="module")
def server(real_export, tmp_path_factory):
    srv = Server(real_export, tmp_path_factory.mktemp("server-v2"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(triton, server):
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def model(real_export):
    return ExportedModel(real_export, "onnx")


@pytest.fixture(scope="module")
def X(model):
    return pd.read_csv(GTZAN_CSV)[list(model.features)].to_numpy(np.float32)[:7]


def features(triton, X, *, binary=False):
    tensor = triton.InferInput("features", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    return [tensor]


def test_triton_client_reads_health_and_metadata(client, model):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and not client.is_model_ready("resnet50")
    server = client.get_server_metadata()
    assert server["name"] == "gsearch" and server["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, len(model.features)]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                               {"name": "label", "datatype": "BYTES", "shape": [-1]}]


def test_triton_client_infer_matches_the_model_and_predict(triton, client, server, model, X):
    expected = model.predict_proba(X)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=False),
              triton.InferRequestedOutput("label", binary_data=False)]
    result = client.infer(MODEL, features(triton, X), outputs=wanted, request_id="batch-1")
    assert result.get_response()["id"] == "batch-1" and result.get_response()["model_name"] == MODEL
    P = result.as_numpy("probabilities")
    assert P.shape == (len(X), len(model.classes)) and P.dtype == np.float32
    np.testing.assert_allclose(P, expected, atol=1e-6)
    labels = [s.decode() if isinstance(s, bytes) else s for s in result.as_numpy("label")]
    assert labels == [model.classes[i] for i in expected.argmax(axis=1)]
    status, answer = server.post_json("/predict", {"features": X.tolist()})   # the same model
    assert status == 200 and [p["genre"] for p in answer["predictions"]] == labels
    # The client's defaults ask for binary outputs (binary_data_output): answered so, read alike.
    plain = client.infer(MODEL, features(triton, X))
    np.testing.assert_allclose(plain.as_numpy("probabilities"), P, atol=1e-7)
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0
               for o in plain.get_response()["outputs"])
    only = client.infer(MODEL, features(triton, X), outputs=wanted[1:])
    assert only.as_numpy("probabilities") is None and list(only.as_numpy("label")) == list(result.as_numpy("label"))


def test_triton_client_binary_defaults_match_json(triton, client, model, X):
    """tritonclient's defaults: the input sent as binary tensor data (Inference-Header-Content-
    Length, raw little-endian FP32 after the JSON header) and every output asked binary."""
    binary = client.infer(MODEL, features(triton, X, binary=True))
    as_json = client.infer(MODEL, features(triton, X), outputs=[
        triton.InferRequestedOutput(name, binary_data=False) for name in ("probabilities", "label")])
    np.testing.assert_allclose(binary.as_numpy("probabilities"), model.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(binary.as_numpy("probabilities"), as_json.as_numpy("probabilities"))
    assert list(binary.as_numpy("label")) == [s.encode() for s in as_json.as_numpy("label")]
    assert binary.get_response()["outputs"][1]["parameters"]["binary_data_size"] > 0
    # one output asked binary, the other in JSON: each as asked
    mixed = client.infer(MODEL, features(triton, X, binary=True), outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=True),
        triton.InferRequestedOutput("label", binary_data=False)])
    outputs = {o["name"]: o for o in mixed.get_response()["outputs"]}
    assert "data" not in outputs["probabilities"] and outputs["label"]["data"] == list(as_json.as_numpy("label"))


@pytest.mark.parametrize("case, status, words", [
    ("unknown model", "404", ["no model 'resnet50'", "gsearch"]),
    ("wrong width", "400", ["shape is [1, 56]", "[N, 57]"]),
    ("NaN", "400", ["data[3]", "NaN", "finite"]),
    ("too many rows", "413", [f"{MAX_ROWS + 1} rows", "--max-rows"]),
    ("wrong datatype", "400", ["INT32", "FP32"]),
])
def test_triton_client_bad_requests_get_protocol_errors(triton, client, X, case, status, words):
    name, inputs = MODEL, features(triton, X[:1])
    if case == "unknown model":
        name = "resnet50"
    elif case == "wrong width":
        inputs = features(triton, X[:1, :56])
    elif case == "NaN":
        bad = X[:1].copy()
        bad[0, 3] = np.nan
        inputs = features(triton, bad)
    elif case == "too many rows":
        inputs = features(triton, np.repeat(X[:1], MAX_ROWS + 1, axis=0))
    elif case == "wrong datatype":
        inputs = [triton.InferInput("features", [1, X.shape[1]], "INT32")]
        inputs[0].set_data_from_numpy(X[:1].astype(np.int32), binary_data=False)
    with pytest.raises(triton.Error) as raised:
        client.infer(name, inputs)
    error = raised.value
    assert error.status() == status, error.message()
    assert "\n" not in error.message() and "Traceback" not in error.message()
    for word in words:
        assert word in error.message(), error.message()
    assert client.infer(MODEL, features(triton, X[:1])).as_numpy("label").shape == (1,)  # still serving


def test_protocol_json_over_plain_http(server, model, X):
    """What a client without a library sends: nested data, and the protocol's errors."""
    url = f"/v2/models/{MODEL}/infer"
    body = {"inputs": [{"name": "features", "shape": [2, 57], "datatype": "FP64", "data": X[:2].tolist()}],
            "outputs": [{"name": "probabilities"}]}
    status, answer = server.post_json(url, body)
    assert status == 200 and [o["name"] for o in answer["outputs"]] == ["probabilities"]
    out = answer["outputs"][0]
    assert out["shape"] == [2, len(model.classes)] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), model.predict_proba(X[:2]), atol=1e-6)
    flat = {"inputs": [{**body["inputs"][0], "data": X[:2].ravel().tolist()}]}
    row = ",".join(map(str, X[0].tolist()))
    for payload, code, words in [
        (b'{"inputs": [', 400, ["malformed JSON", "features"]),
        (b"", 400, ["empty body"]),
        ({**flat, "inputs": [{**flat["inputs"][0], "data": ["fast"] * 114}]}, 400, ["data[0]", "not a number"]),
        ({**flat, "inputs": [{**flat["inputs"][0], "shape": [3, 57]}]}, 400, ["114 values", "171"]),
        ({**flat, "inputs": [{**flat["inputs"][0], "name": "x"}]}, 400, ["one input, 'features'"]),
        ({**flat, "outputs": [{"name": "logits"}]}, 400, ["no output 'logits'"]),
        ({**flat, "priority": 1}, 400, ["unknown field 'priority'"]),
        # nested data follows the shape: N lists of 57 numbers, not a mix or other lengths
        ({**body, "inputs": [{**body["inputs"][0], "data": [X[0].tolist() + X[1].tolist()[:1],
                                                           X[1].tolist()[1:]]}]}, 400,
         ["nested but data[0] is a list of 58 values", "2 lists of 57"]),
        ({**body, "inputs": [{**body["inputs"][0], "data": [X[0].tolist(), *X[1].tolist()]}]}, 400,
         ["nested but data[1] is not a list"]),
        ({**body, "inputs": [{**body["inputs"][0], "data": [[X[0].tolist()], X[1].tolist()]}]}, 400,
         ["nested but data[0] is a list of 1 values"]),
        ({**flat, "outputs": [{"name": "label"}] * 3}, 400, ["outputs", "at most 2"]),
        ({**flat, "parameters": {"priority": [1]}}, 400, ["parameters.priority"]),
        ({**flat, "id": "\ud800"}, 400, ["id is not valid Unicode"]),
        (f'{{"inputs": [{{"name": "features", "shape": [1, 57], "datatype": "FP32", "data": [Infinity,{row[row.index(",") + 1:]}]}}]}}'.encode(),
         400, ["data[0] is Infinity", "finite"]),
    ]:
        assert_error(server.post_json(url, payload), code, *words)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # a declared big body:
    conn.putrequest("POST", url)                                              # refused before it is sent
    conn.putheader("Content-Length", str(MAX_MB * 2**20 + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert_error((response.status, json.loads(response.read())), 413, f"{MAX_MB} MB", "--max-upload-mb")
    conn.close()
    as_form = server.request("POST", url, json.dumps(flat).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})  # curl -d
    assert_error(as_form, 415, "Content-Type: application/json")
    assert_error(server.get("/v2/models/resnet50"), 404, "no model 'resnet50'")
    assert_error(server.get(url), 405, "GET")
    status, schema = server.get("/openapi.json")
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
            "/v2/models/{name}/infer"} <= set(schema["paths"])
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    # no 422: the protocol says 400; 503 when too many heavy requests wait
    assert set(infer["responses"]) == {"200", "400", "404", "413", "415", "503"}
    assert "Retry-After" in infer["responses"]["503"]["headers"]
    # a whole number sent as 2.0 is the same JSON number (and JSON Schema "integer")
    status, answer = server.post_json(url, {**flat, "inputs": [{**flat["inputs"][0], "shape": [2.0, 57]}]})
    assert status == 200 and answer["outputs"][0]["shape"] == [2, len(model.classes)]
    request = schema["components"]["schemas"]["V2InferRequest"]
    assert request["required"] == ["inputs"] and json.dumps(request).count("additionalProperties") >= 1
