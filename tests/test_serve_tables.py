"""gsearch serve for models of real tables (issue 33's exports): a classifier of a table with text
columns and empty cells (tests/test_tables.py's penguins) and a regression (diabetes), each served
by a real `gsearch serve` process (tests/test_serve.py's Server) and spoken to over REST, over the
Open Inference Protocol in JSON, and by Triton's client with its defaults (binary tensor data).
Their answers are the exported model's own (models.predict.ExportedModel on the same rows)."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_diabetes

from conftest import require_module
from gsearch.cli import main
from gsearch.models.export import save_model
from gsearch.models.manifest import ExportManifest
from gsearch.models.predict import ExportedModel
from test_serve import Server, assert_error
from test_tables import penguins, regression_space, tiny

pytestmark = pytest.mark.slow  # servers in subprocesses, a browser
MODEL = "gsearch"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# new rows: an unknown island, empty cells (null and ""), a number for a text feature
ROWS = [{"island": "Dream", "sex": "male", "bill": 50.0, "flipper": 210},
        {"island": "Atlantis", "sex": None, "bill": None, "flipper": 190},
        {"island": "", "sex": "female", "bill": 41.0, "flipper": 200.5},
        {"island": 3, "sex": "female", "bill": 39.0, "flipper": 181}]


def _export(tmp, name, frame, label, space):
    frame.to_csv(tmp / f"{name}.csv", index=False)
    ran = CliRunner().invoke(main, [
        "run", "--data", str(tmp / f"{name}.csv"), "--label", label, "--storage",
        f"sqlite:///{tmp / name}.db", "--trials", "2", "--pruner", "none", "--export",
        str(tmp / name), "--space", f"test_tables:{space.__name__}"], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    return tmp / name


@pytest.fixture(scope="module")
def table_export(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("table"), "penguins", penguins(), "species", tiny)


@pytest.fixture(scope="module")
def regression_export(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("regression"), "diabetes",
                   load_diabetes(as_frame=True).frame, "target", regression_space)


@pytest.fixture(scope="module")
def table(table_export, tmp_path_factory):
    srv = Server(table_export, tmp_path_factory.mktemp("table-server"), audio=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def regression(regression_export, tmp_path_factory):
    srv = Server(regression_export, tmp_path_factory.mktemp("regression-server"), audio=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def triton():
    triton = require_module("tritonclient.http", "needs tritonclient[http]")
    triton.Error = require_module("tritonclient.utils", "needs tritonclient").InferenceServerException
    return triton


def expected(export, rows):
    model = ExportedModel(export, "onnx")
    X = model.matrix({name: [row[name] for row in rows] for name in model.features})
    return model, (model.predict_values(X) if model.regression else model.predict_proba(X))


def test_rest_rows_with_text_gaps_and_unknown_categories(table, table_export):
    model, P = expected(table_export, ROWS)
    status, by_name = table.post_json("/predict", {"rows": ROWS})
    assert status == 200, by_name
    by_position = table.post_json("/predict", {"features": [[row[f] for f in model.features]
                                                            for row in ROWS]})[1]
    assert by_position == by_name
    for answer, p in zip(by_name["predictions"], P):
        assert answer["probabilities"] == pytest.approx(dict(zip(model.classes, p.tolist())), abs=1e-6)
        assert answer["genre"] == model.classes[p.argmax()]
    # "" is an empty cell, as in a CSV (the same answer as null)
    same = table.post_json("/predict", {"rows": [{**ROWS[2], "island": None}]})[1]
    assert same["predictions"][0] == by_name["predictions"][2]


@pytest.mark.parametrize("change, status, words", [
    ({"bill": "fifty"}, 422, ["rows[1]['bill']", '"fifty"', "not a number", "null"]),
    ({"island": True}, 422, ["rows[1]['island']", "categorical", "text"]),
    ({"island": ["Dream"]}, 422, ["rows[1]['island']"]),
    ({"beak": 3.0}, 422, ["rows[1]: unknown feature 'beak'"]),
    ({"flipper": 1e39}, 422, ["rows[1]['flipper']", "float32"]),
])
def test_rest_bad_values_name_the_row_and_column(table, change, status, words):
    rows = [ROWS[0], {**ROWS[0], **change}]
    assert_error(table.post_json("/predict", {"rows": rows}), status, *words)
    missing = {k: v for k, v in ROWS[0].items() if k != "sex"}
    assert_error(table.post_json("/predict", {"rows": [missing]}), 422, "missing feature 'sex'")
    assert_error(table.post_json("/predict", {"features": [["Dream", None, "fifty", 200]]}), 422,
                 "features[0][2]", "not a number")


def _columns(triton, rows, *, binary=True, numeric="FP32"):
    """One tritonclient input per feature: BYTES for the text ones (None as ""), FP32 (NaN for
    None) for the numbers."""
    inputs = []
    for name in ("island", "sex", "bill", "flipper"):
        values = [row[name] for row in rows]
        if name in ("island", "sex"):
            array = np.array(["" if v is None else str(v) for v in values], dtype=np.object_)
            tensor = triton.InferInput(name, [len(rows)], "BYTES")
        else:
            array = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
            tensor = triton.InferInput(name, [len(rows), 1], numeric)
            array = array.reshape(-1, 1)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_triton_client_mixed_inputs_binary_and_json(triton, table, table_export):
    model, P = expected(table_export, ROWS)
    client = triton.InferenceServerClient(f"127.0.0.1:{table.port}")
    try:
        meta = client.get_model_metadata(MODEL)
        assert meta["inputs"] == [{"name": "island", "datatype": "BYTES", "shape": [-1]},
                                  {"name": "sex", "datatype": "BYTES", "shape": [-1]},
                                  {"name": "bill", "datatype": "FP32", "shape": [-1]},
                                  {"name": "flipper", "datatype": "FP32", "shape": [-1]}]
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        binary = client.infer(MODEL, _columns(triton, ROWS))             # the client's defaults
        np.testing.assert_allclose(binary.as_numpy("probabilities"), P, atol=1e-6)
        assert [s.decode() for s in binary.as_numpy("label")] == [model.classes[i] for i in P.argmax(1)]
        as_json = client.infer(MODEL, _columns(triton, ROWS, binary=False), outputs=[
            triton.InferRequestedOutput("probabilities", binary_data=False)])
        np.testing.assert_allclose(as_json.as_numpy("probabilities"), P, atol=1e-6)
        # BYTES for a numeric feature: refused naming it
        inputs = _columns(triton, ROWS)
        inputs[2] = triton.InferInput("bill", [len(ROWS)], "BYTES")
        inputs[2].set_data_from_numpy(np.array(["1"] * len(ROWS), dtype=np.object_))
        with pytest.raises(triton.Error) as raised:
            client.infer(MODEL, inputs)
        error = raised.value
        assert error.status() == "400" and "'bill' is numeric" in error.message(), error.message()
        assert "inputs[2].datatype" in error.message() and "\n" not in error.message()
    finally:
        client.close()


@pytest.mark.parametrize("inputs, words", [
    ([{"name": "island", "shape": [1], "datatype": "BYTES", "data": ["Dream"]}],
     ["no input for feature 'sex' (and 2 more)"]),
    ([{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
     ["one input per feature", "'features'"]),
    ([{"name": "bill", "shape": [2], "datatype": "FP32", "data": [1.0]}], ["'bill'", "1 values", "needs 2"]),
    ([{"name": "bill", "shape": [1], "datatype": "FP32", "data": ["x"]}], ["inputs[0].data[0]", "not a number"]),
    ([{"name": "bill", "shape": [1, 2], "datatype": "FP32", "data": [1.0]}], ["inputs[0].shape", "[N] or [N, 1]"]),
    ([{"name": "island", "shape": [1], "datatype": "FP32", "data": [1.0]}], ["'island' is categorical", "BYTES"]),
])
def test_protocol_json_per_feature_errors(table, inputs, words):
    assert_error(table.post_json(f"/v2/models/{MODEL}/infer", {"inputs": inputs}), 400, *words)


def test_protocol_json_per_feature_with_nulls(table, table_export):
    model, P = expected(table_export, ROWS)
    inputs = [{"name": f, "shape": [len(ROWS)], "datatype": "BYTES" if k == "categorical" else "FP64",
               "data": [None if k == "categorical" and row[f] == "" else
                        (str(row[f]) if k == "categorical" and row[f] is not None else row[f])
                        for row in ROWS]} for f, k in zip(model.features, model.kinds)]
    status, answer = table.post_json(f"/v2/models/{MODEL}/infer", {"inputs": inputs})
    assert status == 200, answer
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], P.shape), P, atol=1e-6)


def test_regression_answers_a_value(triton, regression, regression_export):
    rows = load_diabetes(as_frame=True).frame.drop(columns=["target"]).head(3).to_dict("records")
    model, values = expected(regression_export, rows)
    status, answer = regression.post_json("/predict", {"rows": rows, "top_k": 2})
    assert status == 200 and [set(p) for p in answer["predictions"]] == [{"value"}] * 3
    np.testing.assert_allclose([p["value"] for p in answer["predictions"]], values, rtol=1e-5)
    client = triton.InferenceServerClient(f"127.0.0.1:{regression.port}")
    try:
        meta = client.get_model_metadata(MODEL)
        assert meta["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
        X = np.array([[row[f] for f in model.features] for row in rows], np.float32)
        tensor = triton.InferInput("features", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer(MODEL, [tensor])
        assert result.as_numpy("prediction").shape == (3,)
        np.testing.assert_allclose(result.as_numpy("prediction"), values, rtol=1e-5)
        with pytest.raises(triton.Error) as raised:
            client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("label")])
        assert "outputs are 'prediction'" in raised.value.message()
    finally:
        client.close()
    status, schema = regression.get("/openapi.json")
    assert "value" in schema["components"]["schemas"]["Prediction"]["properties"]


def test_a_bad_clip_samples_is_refused_when_the_export_is_read(real_export, tmp_path, cli):
    """model.json's clip_samples of -1 (every upload was a 500, predict a traceback) is
    refused when the folder is read: by predict, by serve before it binds."""
    model = ExportedModel(real_export, "torch")
    out = tmp_path / "bad"
    save_model(model._model, ExportManifest(model.classes, model.features, (model.config,),
                                            clip_samples=-1), out)
    for command in (["predict", "--model", out, tmp_path], ["serve", "--model", out]):
        result = cli(*command)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "clip_samples is -1" in result.output and "Traceback" not in result.output
    assert json.loads((out / "model.json").read_text())["clip_samples"] == -1


@pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                    reason="needs Debian's chromium (apt-get install chromium) for the browser test")
def test_docs_page_shows_the_routes_in_a_browser_offline(table, tmp_path):
    """/docs in headless Chromium with every host but the server's unreachable (as offline): the
    page needs nothing from a CDN and shows every route and the request schemas."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network but the server
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000", "--dump-dom",
         f"http://127.0.0.1:{table.port}/docs"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    for route in ("/predict", "/predict/audio", "/health", "/model", "/v2/models/{name}/infer"):
        assert f"<code>{route}</code>" in dom, route
    assert 'id="PredictRequest"' in dom and 'id="PredictRow"' in dom and "island" in dom
    assert "<script" not in dom and "cdn" not in dom.lower()
