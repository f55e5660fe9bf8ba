"""gsearch serve against requests built to cost it: oversized or deeply nested JSON, values beyond
float32, audio whose header promises hours of samples or an absurd sample rate, odd upload
names. A real server process on 127.0.0.1 (tests/test_serve.py's Server: --max-upload-mb 2,
--max-rows 200); every answer is a one-line 4xx and the server keeps answering. The cost
figures (seconds, /health latency, peak RSS) are in `bench/bench_serve.py --abuse`, not here.
Last, `gsearch studies` with a study name holding control characters."""

import http.client
import io
import json
import os
import socket
import time
import uuid

import numpy as np
import optuna
import pytest
import soundfile as sf

from gsearch.data.audio import AudioLimitError, check_audio_header
from gsearch.data.schema import FEATURE_NAMES
from gsearch.serve import MAX_WAITING
from test_serve import MAX_ROWS, assert_error, server  # noqa: F401  (server: a module-scoped fixture, one per module)

ROW = [0.5] * 57


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
