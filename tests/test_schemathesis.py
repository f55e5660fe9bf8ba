"""Schemathesis against a real `gsearch serve` (tests/test_serve.py's Server: --max-upload-mb 2,
--max-rows 200): the OpenAPI schema at /openapi.json says what the server enforces, and every
answer to requests generated from it (valid and invalid ones, every route, methods it does not
take) is the documented one: no 5xx, a status and body the schema lists, schema-valid requests
answered, schema-violating ones refused. `schemathesis run --checks all`, bounded in time
(--max-time: it stops there whatever the machine's speed). The rules JSON Schema cannot state
(data length tied to shape, the model's overflow, decodable audio) are in
tests/schemathesis_hooks.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_module
from gsearch.serve import FLOAT32_MAX
from test_serve import MAX_ROWS, Server, server  # noqa: F401  (server: a module-scoped fixture, one per module)
from test_serve_tables import table_export  # noqa: F401  (a module-scoped fixture)

pytestmark = pytest.mark.slow  # a server in a subprocess

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MAX_TIME_S = 30  # schemathesis --max-time: the whole run
# 413 (too many rows, a body too large) is how this server refuses an oversized request, not in
# schemathesis's default list of rejections; the list is otherwise narrowed to what it answers.
CONFIG = """\
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "413", "415", "422"]
"""


@pytest.fixture(scope="module")
def schemathesis():
    """Checked before the server starts (module scope, listed first)."""
    return require_module("schemathesis", "needs schemathesis")


def test_openapi_schema_states_what_the_server_enforces(server):
    status, schema = server.get("/openapi.json")
    assert status == 200
    schemas = schema["components"]["schemas"]
    body = schemas["PredictRequest"]
    assert body["additionalProperties"] is False
    assert [branch["required"] for branch in body["oneOf"]] == [["features"], ["rows"]]
    features = body["properties"]["features"]["anyOf"][0]
    assert (features["minItems"], features["maxItems"]) == (1, MAX_ROWS)
    assert features["items"]["minItems"] == features["items"]["maxItems"] == 57
    assert features["items"]["items"] == {"type": "number", "minimum": -FLOAT32_MAX,
                                          "maximum": FLOAT32_MAX}
    rows = body["properties"]["rows"]["anyOf"][0]
    row = schemas[rows["items"]["$ref"].rpartition("/")[2]]  # a component of its own (pydantic's)
    assert rows["maxItems"] == MAX_ROWS and len(row["required"]) == 57
    upload = schemas["Body_predict_upload_predict_audio_post"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["minLength"] == 1
    shape = schemas["V2InferInput"]["properties"]["shape"]
    assert shape["prefixItems"] == [{"type": "integer", "minimum": 1, "maximum": MAX_ROWS},
                                    {"const": 57, "type": "integer"}]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path.startswith("/v2/models/"):
                assert operation["parameters"][0]["schema"]["enum"] == ["gsearch"]
            if "requestBody" in operation:  # every refusal of a body is documented
                assert {"400", "413"} <= set(operation["responses"]), path
                assert all(answer["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
                           for code, answer in operation["responses"].items() if code != "200")


def run_schemathesis(server, tmp_path, max_time_s: int = MAX_TIME_S) -> str:
    """`schemathesis run --checks all` against the server; its report, asserted to pass."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"http://127.0.0.1:{server.port}/openapi.json", "--checks", "all",
               "--max-examples", "25", "--max-time", str(max_time_s), "--workers", "1",
               "--request-timeout", "20", "--generation-database", "none", "--no-color"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          timeout=max_time_s + 60,  # a hung request ends the test here
                          env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)})
    report = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    return done.stdout


def test_schemathesis_finds_no_failure(schemathesis, server, tmp_path):
    stdout = run_schemathesis(server, tmp_path)
    assert "10 selected / 10 total" in stdout and " passed" in stdout, stdout[-8000:]
    # still serving, nothing left of the uploads, and no traceback (a 500) in the server's log
    assert server.get("/health")[0] == 200
    assert server.temp_files() == set()
    assert "Traceback" not in server.output()


def test_schemathesis_finds_no_failure_on_a_table_model(schemathesis, table_export, tmp_path):
    """The same run against a model of a table (text features, empty cells): its schema states
    a type per feature (text, number or null) and one input tensor per feature."""
    (tmp_path / "server").mkdir()
    table = Server(table_export, tmp_path / "server", audio=False)
    try:
        status, schema = table.get("/openapi.json")
        row = schema["components"]["schemas"]["PredictRow"]["properties"]
        assert row["island"]["anyOf"][0] == {"type": "string"} and {"type": "null"} in row["bill"]["anyOf"]
        stdout = run_schemathesis(table, tmp_path, max_time_s=20)
        assert " passed" in stdout, stdout[-8000:]
        assert table.get("/health")[0] == 200 and "Traceback" not in table.output()
    finally:
        table.stop()
