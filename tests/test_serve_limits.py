"""gsearch serve against requests built to cost it: oversized or deeply nested JSON, values beyond
float32, audio whose header promises hours of samples or an absurd sample rate, odd upload
names. A real server process on 127.0.0.1 (tests/test_serve.py's Server: --max-upload-mb 2,
--max-rows 200); every answer is a one-line 4xx and the server keeps answering. The cost
figures (seconds, /health latency, peak RSS) are in `bench/bench_serve.py --abuse`, not here.
Last, `gsearch studies` with a study name holding control characters."""

import asyncio
import errno
import http.client
import io
import json
import os
import select
import socket
import time
import uuid

import numpy as np
import optuna
import pytest
import soundfile as sf
import starlette.formparsers

import gsearch.serve.uploads

from gsearch.data.audio import AudioLimitError, check_audio_header
from gsearch.data.schema import FEATURE_NAMES
from gsearch.models.config import TrialConfig
from gsearch.models.export import build_exported, save_model
from gsearch.models.manifest import ExportManifest
from gsearch.serve import MAX_WAITING, create_app
from test_serve import MAX_ROWS, Server, assert_error, server  # noqa: F401  (server: a module-scoped fixture, one per module)

ROW = [0.5] * 57
WIDE = 20_000  # features of a wide model


def still_serving(server):
    assert server.get("/health")[0] == 200
    assert server.post_json("/predict", {"features": [ROW]})[0] == 200


@pytest.mark.parametrize("path", ["/predict", "/v2/models/gsearch/infer"])
@pytest.mark.parametrize("body, status, words", [
    (b'{"rows": [' + b",".join([b'{"a":1}'] * 50_000) + b"]}", 413,
     ["50002 JSON arrays and objects", "--max-rows"]),
    (b'{"features": [' + b",".join([b"[1]"] * (MAX_ROWS + 100)) + b"]}", 413, ["--max-rows"]),
    (b'{"features": [[' + b",".join([b"0.5"] * 100_000) + b"]]}", 413, ["values", "--max-rows"]),
    (b'{"features": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, ["nested 5001 deep", "32"]),
    (b'{"features": [["[{,", "\\"[[[["]], "top_k": "\\\\"}', 422, []),  # brackets in strings: not rows
])
def test_oversized_json_is_refused_from_its_bytes(server, path, body, status, words):
    status = 400 if path.startswith("/v2") and status == 422 else status
    assert_error(server.post_json(path, body), status, *words)
    still_serving(server)


@pytest.mark.parametrize("payload, words", [
    ({"features": [[1e39] + ROW[1:]]}, ["features[0][0]", "1e+39", "float32"]),
    ({"features": [ROW, ROW[:56] + [-1e300]]}, ["features[1][56]", "float32"]),
    ({"rows": [{**dict.fromkeys(FEATURE_NAMES, 1.0), "tempo": 3.5e38}]}, ["rows[0]['tempo']", "float32"]),
])
def test_values_beyond_float32_are_refused(server, payload, words):
    assert_error(server.post_json("/predict", payload), 422, *words)


def test_huge_integers_are_refused_on_both_routes(server):
    row = ",".join(["0.5"] * 56).encode()
    for digits, v2_words in [(5000, ["4300 digits"]), (400, ["data[0] is 1111", "float32"])]:
        number = b"1" * digits
        features = b'{"features": [[' + number + b"," + row + b"]]}"
        status, answer = server.post_json("/predict", features)
        assert_error((status, answer), status)
        assert status in (400, 422)
        tensor = (b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 57], '
                  b'"data": [' + number + b"," + row + b"]}]}")
        assert_error(server.post_json("/v2/models/gsearch/infer", tensor), 400, *v2_words)
    still_serving(server)


@pytest.mark.parametrize("value", [1e38, -3.4e38, 3.4e38])
def test_finite_but_huge_values_never_give_a_500_or_a_non_finite_answer(server, value):
    for name, payload in [("one column", {"features": [[value] + ROW[1:]]}),
                          ("everywhere", {"features": [[value] * 57]})]:
        status, answer = server.post_json("/predict", payload)
        if status == 200:
            assert all(np.isfinite(list(p["probabilities"].values())).all()
                       for p in answer["predictions"]), name
        else:
            assert_error((status, answer), 422, "features[0]", "not finite")
        v2 = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 57],
                          "data": payload["features"][0]}]}
        status, answer = server.post_json("/v2/models/gsearch/infer", v2)
        if status == 200:
            assert np.isfinite(answer["outputs"][0]["data"]).all(), name
        else:
            assert_error((status, answer), 400, "row 0", "not finite")
    still_serving(server)


def _stalled_body(server, length: int) -> socket.socket:
    """A POST /predict that declares `length` bytes of JSON and sends only its first few: the
    server waits for the rest (holding a slot, or waiting for one)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode() + b'{"features": [')
    return sock


def test_big_bodies_wait_unread_for_a_slot_and_the_queue_is_bounded(server):
    """JSON bodies that may hold --max-rows rows are read one per CPU at a time (the server's
    memory holds at most that many); the others wait unread, at most MAX_WAITING of them: one
    more is answered 503 with Retry-After at once. Meanwhile /health, small requests and audio
    refusals are answered at once; once the slots are free, big bodies are served again."""
    big = 3 * 2**19  # 1.5 MB: room for over --max-rows rows, under --max-upload-mb 2
    held = [_stalled_body(server, big) for _ in range((os.cpu_count() or 1) + MAX_WAITING)]
    try:
        deadline = time.monotonic() + 30
        while True:  # until the server has taken in every stalled request
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.putrequest("POST", "/predict")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(big))
            conn.endheaders()
            conn.sock.settimeout(2)
            try:
                response = conn.getresponse()
                break
            except TimeoutError:  # it waits in line: the queue is not full yet
                conn.close()
                assert time.monotonic() < deadline, "the queue of big bodies never filled"
        answer = response.status, json.loads(response.read())
        assert_error(answer, 503, "busy", f"{MAX_WAITING} JSON requests", "retry")
        assert response.getheader("Retry-After", "").isdigit()
        conn.close()
        t = time.perf_counter()
        still_serving(server)
        wav = _wav_bytes(100, 1000)
        assert_error(server.upload("slow.wav", wav), 422, "100 Hz")
        assert time.perf_counter() - t < 10
    finally:
        for sock in held:
            sock.close()
    padded = json.dumps({"features": [ROW] * 10}).encode() + b" " * (big - 10_000)
    deadline = time.monotonic() + 30
    while (answer := server.post_json("/predict", padded))[0] == 503 and time.monotonic() < deadline:
        time.sleep(0.2)  # the stalled requests are still being let go
    assert answer[0] == 200 and len(answer[1]["predictions"]) == 10
    assert "Traceback" not in server.output()


@pytest.fixture(scope="module")
def wide_export(tmp_path_factory):
    """An untrained classifier of WIDE numbers (what it costs the server does not depend on its
    weights), written as export-best writes one."""
    manifest = ExportManifest(tuple(f"class{i}" for i in range(10)),
                              tuple(f"f{i}" for i in range(WIDE)), (TrialConfig(n_layers=1, width=64),))
    out = tmp_path_factory.mktemp("wide") / "export"
    save_model(build_exported(manifest), manifest, out)
    return out


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


@pytest.mark.slow
def test_a_wide_model_is_budgeted_by_values_not_rows(wide_export, tmp_path):
    """A model of 20,000 features: 200 rows (within --max-rows 200) are 4 M values, over
    --max-values (1,000,000): refused from the body's bytes, fast, the server's memory bounded
    (issue 35 item 11: 1,250 rows took 14.6 s and 1.84 GB). The most rows allowed, 50, are
    answered; 51 are refused by the schema's bound."""
    srv = Server(wide_export, tmp_path, "--max-upload-mb", 64, audio=False)
    try:
        row = "[" + ",".join(["0.5"] * WIDE) + "]"
        body = ('{"features": [' + ",".join([row] * 200) + "]}").encode()  # 16 MB
        t = time.perf_counter()
        assert_error(srv.post_json("/predict", body), 413, "values", "--max-values")
        assert time.perf_counter() - t < 10
        status, answer = srv.post_json("/predict", ('{"features": [' + ",".join([row] * 50) + "]}").encode())
        assert status == 200 and len(answer["predictions"]) == 50
        assert_error(srv.post_json("/predict", ('{"features": [' + ",".join([row] * 51) + "]}").encode()),
                     413, "51 rows", "50 allowed", "--max-values")
        status, schema = srv.get("/openapi.json")
        assert schema["components"]["schemas"]["PredictRequest"]["properties"]["features"]["anyOf"][0]["maxItems"] == 50
        assert srv.get("/health")[0] == 200
        assert _peak_rss_mb(srv.proc.pid) < 1024
    finally:
        srv.stop()


def _trickle(port: int, path: str, headers: str, start: bytes,
             seconds: float) -> tuple[int, dict] | None:
    """Send a request's headers and the `start` of its body, then a byte every 0.1 s for
    `seconds`; the answer that came meanwhile (None: none came)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                     "Content-Length: 100000\r\n\r\n".encode() + start)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([sock], [], [], 0.1)[0]:
                head, _, rest = sock.recv(65536).partition(b"\r\n\r\n")
                return int(head.split()[1]), json.loads(rest or sock.recv(65536))
            try:
                sock.sendall(b" ")
            except OSError:
                continue  # closed by the server: its answer is there to read
        return None
    finally:
        sock.close()


@pytest.mark.slow
def test_a_body_sent_a_byte_at_a_time_is_cut_at_the_deadline(real_export, tmp_path):
    """--body-timeout 2: a client sending a byte every 0.1 s holds its slot 2 s, not for good,
    and is answered 408; /health answers meanwhile."""
    srv = Server(real_export, tmp_path, "--body-timeout", 2)
    try:
        form = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for path, headers, start in [
                ("/predict", "Content-Type: application/json\r\n", b'{"features": '),
                ("/predict/audio", "Content-Type: multipart/form-data; boundary=b\r\n", form)]:
            t = time.perf_counter()
            answer = _trickle(srv.port, path, headers, start, 10)
            assert answer is not None, f"{path}: no answer after 10 s"
            assert_error(answer, 408, "2 s", "--body-timeout")
            assert time.perf_counter() - t < 6
            assert srv.get("/health")[0] == 200
        assert "Traceback" not in srv.output()
    finally:
        srv.stop()


def _wav_bytes(rate, seconds):
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(rate * seconds), np.int16), rate, format="WAV")
    return buffer.getvalue()


def _wav(tmp_path, name, rate, seconds, channels=1, subtype=None):
    path = tmp_path / name
    sf.write(path, np.zeros((int(rate * seconds), channels), np.int16), rate, subtype=subtype)
    return path


def test_audio_header_limits(tmp_path):
    ok = _wav(tmp_path, "ok.wav", 22050, 3)
    check_audio_header(ok)
    for path, kind in [(_wav(tmp_path, "slow.wav", 100, 1000), "rate"),
                       (_wav(tmp_path, "fast.wav", 384_000, 0.01), "rate"),
                       (_wav(tmp_path, "long.flac", 8000, 700), "length"),
                       (_wav(tmp_path, "wide.flac", 48_000, 400, channels=8), "length")]:
        with pytest.raises(AudioLimitError) as e:
            check_audio_header(path)
        assert e.value.kind == kind and str(path) in str(e.value)
    with pytest.raises(AudioLimitError):
        check_audio_header(ok, max_seconds=2)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio")
    check_audio_header(garbage)  # unreadable headers are left to load_audio's own message


def test_audio_refused_from_its_header_before_decoding(server, tmp_path):
    for path, status, words in [
        (_wav(tmp_path, "slow.wav", 100, 1000), 422, ["slow.wav", "100 Hz", "4000-192000"]),
        (_wav(tmp_path, "one-hz.wav", 1, 200_000), 422, ["one-hz.wav", "1 Hz"]),
        (_wav(tmp_path, "hour.flac", 8000, 3600), 413, ["hour.flac", "3600 s", "--max-audio-seconds"]),
    ]:
        assert path.stat().st_size < 2 * 2**20  # under the upload cap: only the header stops it
        assert_error(server.upload(path.name, path.read_bytes()), status, *words)
    assert server.temp_files() == set()
    still_serving(server)


def _multipart(server, disposition: str, data: bytes):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    return server.request("POST", "/predict/audio", body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_upload_without_a_filename_or_with_a_bare_slash_is_named_clearly(server):
    assert_error(_multipart(server, 'name="file"', b"RIFF...."), 400, "not a file upload", "curl -F")
    status, answer = server.upload("/", b"genre: blues\n")
    assert_error((status, answer), 422, "upload: not a supported audio file type")
    status, answer = server.upload("dir/", b"genre: blues\n")
    assert_error((status, answer), 422)
    assert not answer["error"].startswith(":")


def test_studies_table_escapes_control_characters_in_names(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    optuna.create_study(study_name="a\nb\x1b[31m", storage=url)
    optuna.create_study(study_name="plain", storage=url)
    result = cli("studies", "--storage", url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3 and "\x1b" not in result.output
    assert any(line.startswith("a\\nb\\x1b[31m ") for line in lines), result.output
    assert any(line.startswith("plain ") for line in lines)


def _asgi_post(app, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
    """One request to the app in this process (no server, no HTTP client): (status, JSON)."""
    sent, parts = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", content_type.encode()),
                         (b"content-length", str(len(body)).encode())]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


class _FullDisk(io.BytesIO):
    """A temporary file on a full disk."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def write(self, *data):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["the form's spool", "the staged upload"])
def test_a_full_tmpdir_is_507_out_of_space(real_export, monkeypatch, where):
    """A full $TMPDIR while an upload is written (Starlette spools the form to it, then the
    upload is staged there) is 507 saying the server is out of space, not "could not be read"."""
    app = create_app(real_export, warm_audio=False)
    if where == "the form's spool":
        monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", _FullDisk)
    else:
        monkeypatch.setattr(gsearch.serve.uploads.shutil, "copyfileobj", _FullDisk().write)
    # (the module's shutil is the one shutil: only this test's upload meets the full disk)
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="song.wav"\r\n\r\n'
            + _wav_bytes(22050, 1) + b"\r\n--b--\r\n")
    answer = _asgi_post(app, "/predict/audio", body, "multipart/form-data; boundary=b")
    assert_error(answer, 507, "out of disk space", "TMPDIR")
