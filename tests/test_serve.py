"""gsearch serve: the real server in a subprocess, spoken to over HTTP on 127.0.0.1.

One server serves the whole module (started with SIGINT ignored, as a shell's `&` does);
the last test stops it with SIGTERM."""

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from conftest import GTZAN_CSV, SHARED_GTZAN
from gsearch.data.schema import FEATURE_NAMES
from gsearch.models.predict import ExportedModel

CLIP = SHARED_GTZAN / "genres_original" / "blues" / "blues.00000.wav"
MAX_MB, MAX_ROWS = 2, 200


@pytest.fixture(scope="module")
def export_dir(real_export):
    return real_export


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir, tmp, *options, audio=True):
        """`options`: more of gsearch serve's (a later one wins); `audio`: wait for the audio
        warm-up too (a model of other features has none)."""
        self.port, self.tmp = free_port(), tmp / "tmpdir"
        self.tmp.mkdir()
        self.log = open(tmp / "server.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gsearch", "serve", "--model", str(model_dir),
             "--port", str(self.port), "--max-upload-mb", str(MAX_MB), "--max-rows", str(MAX_ROWS),
             *map(str, options)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**__import__("os").environ, "TMPDIR": str(self.tmp)},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as a shell's `&`
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:   # up, and its audio warm-up (which writes a temporary tone) done
                status, health = self.get("/health")
                if status == 200 and (health["audio_ready"] or not audio):
                    # what the libraries leave at import (onnxruntime writes a .ses file)
                    self.baseline = {p.name for p in self.tmp.iterdir()}
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not start:\n{self.output()}")

    def temp_files(self) -> set[str]:
        """Files in the server's TMPDIR that were not there once it had started."""
        return {p.name for p in self.tmp.iterdir()} - self.baseline

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text) of one request."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, text, kind = r.status, r.read().decode(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, text, kind = e.code, e.read().decode(), e.headers.get("content-type", "")
        return status, json.loads(text) if kind.startswith("application/json") else text

    def get(self, path):
        return self.request("GET", path)

    def post_json(self, path, payload):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def upload(self, name, data, field="file", query=""):
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", f"/predict/audio{query}", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(real_export, tmp_path_factory):
    """A real server of the module's own (tests/test_serve_limits.py and test_schemathesis.py
    import this fixture: one server per module)."""
    srv = Server(real_export, tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def rows():
    return pd.read_csv(GTZAN_CSV)


def assert_error(answer, status, *words):
    got, body = answer
    assert got == status, body
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


def test_health_model_and_docs(server, export_dir):
    status, health = server.get("/health")
    assert status == 200 and health["status"] == "ok" and health["backend"] == "onnx"
    status, meta = server.get("/model")
    assert status == 200 and meta == json.loads((export_dir / "model.json").read_text())
    status, page = server.get("/docs")
    assert status == 200 and "swagger" in page.lower()
    status, schema = server.get("/openapi.json")
    assert {"/health", "/model", "/predict", "/predict/audio"} <= set(schema["paths"])
    assert_error(server.get("/nowhere"), 404, "/docs")
    assert_error(server.get("/predict"), 405, "GET")


def test_predict_features_and_rows_match_the_model(server, export_dir, rows):
    model = ExportedModel(export_dir, "onnx")
    X = rows[list(model.features)].to_numpy(np.float32)[:5]
    expected = model.predict_proba(X)
    status, by_position = server.post_json("/predict", {"features": X.tolist(), "top_k": 2})
    assert status == 200
    named = [dict(zip(model.features, map(float, x))) for x in X]
    status, by_name = server.post_json("/predict", {"rows": named})
    assert status == 200
    for a, b, p in zip(by_position["predictions"], by_name["predictions"], expected):
        assert a["genre"] == b["genre"] == model.classes[p.argmax()]
        assert a["probabilities"] == pytest.approx(dict(zip(model.classes, p.tolist())), abs=1e-6)
        assert list(a["probabilities"]) == [g for g, _ in sorted(a["probabilities"].items(), key=lambda kv: -kv[1])]
        assert [t["genre"] for t in a["top_k"]] == list(a["probabilities"])[:2]
        assert len(b["top_k"]) == 3  # the default
        assert set(a) == set(b) == {"genre", "probabilities", "top_k"}  # the one prediction object
    # 2.0 is the JSON number 2 (JSON Schema's "integer" too); a null for the other field is absent
    status, same = server.post_json("/predict", {"features": X.tolist(), "rows": None, "top_k": 2.0})
    assert status == 200 and same == by_position


@pytest.mark.parametrize("payload, status, words", [
    (b"", 400, ["empty body"]),
    (b"{\"features\": [[1, 2", 400, ["malformed JSON"]),
    (b"[1, 2]", 422, ["JSON object"]),
    ({"features": [[1.0] * 56]}, 422, ["features[0] has 56 numbers", "57"]),
    ({"features": [[1.0] * 56 + ["fast"]]}, 422, ["features[0][56]", "number"]),
    (b"{\"features\": [[NaN]]}", 422, ["features[0][0]", "finite"]),
    ({"rows": [{**dict.fromkeys(FEATURE_NAMES[1:], 1.0)}]}, 422, ["missing feature 'chroma_stft_mean'"]),
    ({"rows": [{**dict.fromkeys(FEATURE_NAMES, 1.0), "loudness": 3.0}]}, 422, ["unknown feature 'loudness'"]),
    ({"features": [[1.0] * 57], "rows": []}, 422, ["exactly one"]),
    ({"features": []}, 422, ["empty"]),
    ({"features": [[1.0] * 57], "top_k": 0}, 422, ["top_k"]),
    ({"features": [[1.0] * 57], "top_k": 2.5}, 422, ["top_k", "integer"]),
    ({"features": [[1.0] * 57], "rows": None, "top_k": True}, 422, ["top_k", "integer"]),
    ({"feature": [[1.0] * 57]}, 422, ["unknown field 'feature'"]),
    ({"features": [[1.0] * 57] * (MAX_ROWS + 1)}, 413, [f"{MAX_ROWS + 1} rows", "--max-rows"]),
])
def test_bad_rows_get_one_line_errors(server, payload, status, words):
    assert_error(server.post_json("/predict", payload), status, *words)
    assert server.post_json("/predict", {"features": [[0.5] * 57]})[0] == 200  # still answering


@pytest.mark.skipif(not CLIP.is_file(), reason=f"GTZAN clip not found at {CLIP}")
def test_audio_upload_agrees_with_its_csv_row_and_leaves_no_temp_files(server, export_dir, rows):
    status, got = server.upload(CLIP.name, CLIP.read_bytes(), query="?top_k=10")
    assert status == 200, got
    assert got["file"] == CLIP.name and got["windows"] == 1 and len(got["probabilities"]) == 10
    model = ExportedModel(export_dir, "onnx")  # the Kaggle row of the same clip: same features
    row = rows[rows["filename"] == CLIP.name][list(model.features)].to_numpy(np.float32)
    expected = dict(zip(model.classes, model.predict_proba(row)[0].tolist()))
    assert got["probabilities"] == pytest.approx(expected, abs=2e-3)
    assert got["genre"] == max(expected, key=expected.get)
    status, top = server.upload("song.wav", CLIP.read_bytes(), query="?top_k=2")
    assert status == 200 and [t["genre"] for t in top["top_k"]] == list(got["probabilities"])[:2]
    # the prediction object of POST /predict, with the file's name and the windows averaged
    assert set(top) == {"file", "genre", "probabilities", "top_k", "windows"}
    assert top["probabilities"] == got["probabilities"] and len(got["top_k"]) == 10
    for answer, words in [
        (server.upload("notes.txt", b"genre: blues\n" * 50), ["notes.txt"]),
        (server.upload("cut.wav", CLIP.read_bytes()[:2000]), ["cut.wav"]),
        (server.upload("empty.wav", b""), ["empty.wav", "empty"]),
        (server.upload(CLIP.name, CLIP.read_bytes(), field="audio"), ["field 'file'"]),
        (server.upload(CLIP.name, CLIP.read_bytes(), query="?top_k=none"), ["top_k"]),
    ]:
        assert_error(answer, answer[0], *words)
        assert 400 <= answer[0] < 500 and str(server.tmp) not in answer[1]["error"]
    assert server.get("/health")[1]["audio_ready"]  # the background warm-up is done too
    assert server.temp_files() == set()


def _raw_post(server, headers: dict, body_parts=()):
    """POST /predict/audio sending the headers and then only body_parts; the answer comes
    before the body is complete."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/predict/audio")
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    for part in body_parts:
        conn.send(part)
    response = conn.getresponse()
    answer = response.status, json.loads(response.read())
    conn.close()
    return answer


def test_upload_over_the_limit_is_refused_while_it_streams(server):
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    declared = _raw_post(server, {**multipart, "Content-Length": str(3 * 2**20)})
    assert_error(declared, 413, f"{MAX_MB} MB", "--max-upload-mb")
    head = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n\r\n"
    data = b"\0" * (MAX_MB * 2**20 + 1 - len(head))  # one byte over; the body never ends
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in (head, data[:2**20], data[2**20:])]
    assert_error(_raw_post(server, {**multipart, "Transfer-Encoding": "chunked"}, chunks), 413, "MB")
    assert server.get("/health")[0] == 200
    assert server.temp_files() == set()


def test_fifty_concurrent_requests_are_all_answered(server):
    one = {"features": [[0.5] * 57]}
    batch = {"features": [[1.0 + i / 100] * 57 for i in range(100)]}
    jobs = [("/predict", one, 200), ("/predict", batch, 200), ("/predict", b"{", 400),
            ("/health", None, 200), ("/predict", {"features": [[1.0]]}, 422)]
    work = [jobs[i % len(jobs)] for i in range(50)]

    def call(job):
        path, payload, _ = job
        return server.get(path) if payload is None else server.post_json(path, payload)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(call, work))
    assert [a[0] for a in answers] == [job[2] for job in work]
    assert all(len(a[1]["predictions"]) == 100 for a, job in zip(answers, work) if job[1] is batch)
    assert server.get("/health")[0] == 200


def test_bad_model_folder_and_taken_port_fail_before_serving(cli, export_dir, tmp_path):
    result = cli("serve", "--model", tmp_path)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "not a gsearch export" in result.output
    with socket.create_server(("127.0.0.1", 0)) as taken:
        result = cli("serve", "--model", export_dir, "--port", taken.getsockname()[1])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "choose another --port" in result.output


def test_sigterm_stops_the_server_cleanly(server):
    """Last: stops the module's server (started with SIGINT ignored, as after a shell's `&`)
    with SIGTERM, as a service manager does; it finishes and exits 0."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0, server.output()
    output = server.output()
    assert output.rstrip().endswith("server stopped") and "Traceback" not in output
