"""Throughput and latency of `gsearch serve` on loopback.

Starts the real server (python -m gsearch serve) on a free port of 127.0.0.1, waits
until it is ready (audio warm-up included), then for each workload and each number of
concurrent clients sends a fixed number of requests and prints requests/s and p50/p99 latency.
Workloads: one feature row per POST /predict, 100 rows per POST /predict, one 30-second GTZAN
clip per POST /predict/audio. Each client is a thread with its own keep-alive connection; the
clients run on the same machine as the server and take some of its CPU. Stops the server itself.

Usage: python bench/bench_serve.py [--model EXPORT_DIR] [--clients 1,8,32] [--workers N]
       [--backend onnx|torch] [--rows-requests 400] [--batch-requests 100] [--audio-requests 4]
       python bench/bench_serve.py --abuse [--model EXPORT_DIR]
       python bench/bench_serve.py --hostile 60 [--hostile-clients 4] [--max-rss-mb 1024]
                                   [--features 20000]
Without --model, a small model is trained on the real features_30_sec.csv (a few seconds).

--abuse: the cost of oversized JSON bodies (the server at its defaults: --max-upload-mb 50,
--max-rows 10000). For each body it sends one POST /predict and meanwhile polls GET /health every
50 ms on another connection; it prints the status and seconds of the bad request, the slowest
/health answer during it, and the server process's peak RSS while it ran (VmHWM, reset before
each body through /proc/PID/clear_refs). Bodies: 50 MB of tiny row objects ({"rows": [{"a":1},
...]}, 6.5 M rows), 200,000 rows of 57 numbers ({"features": [[0.5, ...], ...]}, 44 MB), and
for reference a valid batch of 10,000 rows.

--hostile SECONDS: the server at its defaults under hostile load. --hostile-clients clients
(default 4) each send the worst request shapes back to back, on a new connection each, for
SECONDS seconds: 50 MB of tiny row objects, 200,000 rows of 57 numbers, JSON nested 10 million
deep, the largest valid batch (10,000 rows), a 195 KB WAV at 1 Hz and one at 100 Hz, an hour of
8 kHz FLAC silence (87 KB), and a long FLAC that is decoded (599 s of 48 kHz stereo, just under
what the header check lets through); then the requests in flight are finished. Until the last
answer, GET /health is sent every 50 ms on its own connection, a one-row POST /predict every
100 ms (what a well-behaved client sees), and the server's RSS read every 50 ms (VmHWM, reset at
the start, is the peak). It prints the answers by shape and status, the /health and one-row
latencies (max, p99) and the peak RSS, and exits 1 if /health ever took over 1 s (or failed) or
the peak RSS went over --max-rss-mb (default 1024). With --features N (and no --model) the model
is an untrained one of N numbers (a wide model), the rows of numbers are N wide (about 44 MB of
them) and the largest valid batch is --max-values / N rows.
"""
import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from gsearch.data.schema import FEATURE_NAMES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"
CSV = SHARED / "features_30_sec.csv"
CLIP = SHARED / "genres_original" / "blues" / "blues.00000.wav"


def quick_export(out: Path) -> Path:
    import torch

    from gsearch.data.load import load_dataset
    from gsearch.data.schema import FEATURE_NAMES
    from gsearch.models.config import TrialConfig
    from gsearch.models.export import save_model
    from gsearch.models.manifest import ExportManifest
    from gsearch.models.population import TrainData, train

    torch.set_num_threads(1)
    ds = load_dataset(CSV)
    config = TrialConfig(n_layers=2, width=256, dropout=0.1, lr=1e-3, epochs=20)
    model, _ = train(config, TrainData(ds.X, ds.y, len(ds.classes)))
    save_model(model, ExportManifest(ds.classes, FEATURE_NAMES, (config,), clip_samples=ds.clip_samples), out)
    return out


def wide_export(out: Path, n_features: int) -> Path:
    """An untrained classifier of n_features numbers (10 classes), written as export-best writes
    one: what a wide model costs the server does not depend on its weights."""
    from gsearch.models.config import TrialConfig
    from gsearch.models.export import build_exported, save_model
    from gsearch.models.manifest import ExportManifest

    manifest = ExportManifest(tuple(f"class{i}" for i in range(10)),
                              tuple(f"f{i}" for i in range(n_features)),
                              (TrialConfig(n_layers=1, width=64),))
    save_model(build_exported(manifest), manifest, out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, workers: int, backend: str, log) -> subprocess.Popen:
    """The server, once ready: its audio warm-up done, where the model classifies audio."""
    features = json.loads((model / "model.json").read_text())["features"]
    audio = set(features) <= set(FEATURE_NAMES)  # else the server does not take audio
    cmd = [sys.executable, "-m", "gsearch", "serve", "--model", str(model), "--port",
           str(port), "--workers", str(workers), "--backend", backend]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            health = json.loads(conn.getresponse().read())
            if health.get("audio_ready") or health.get("audio_ready") is None or audio is False:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready; see its log above")


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def run_cell(port: int, path: str, body: bytes, content_type: str, clients: int, requests: int) -> dict:
    """`requests` POSTs shared by `clients` threads; per-request latency and wall time."""
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(requests))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            t = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException) as e:
                ok, conn = False, http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                errors.append(str(e))
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - t)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": requests, "ok": len(latencies), "errors": len(errors), "rps": len(latencies) / wall,
            "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "p99": float(np.percentile(lat, 99)) if lat.size else float("nan")}


def _rss(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM) in MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def abuse_cell(port: int, pid: int, body: bytes) -> dict:
    """One POST /predict of `body` while /health is polled; status, seconds, worst /health
    latency, peak RSS (MB) of the server process during the request."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    done, health = threading.Event(), []

    def poll():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while not done.is_set():
            t = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            health.append(time.perf_counter() - t)
            time.sleep(0.05)
        conn.close()

    poller = threading.Thread(target=poll)
    poller.start()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.perf_counter()
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        status, answer = response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        status, answer = "failed", str(e).encode()
    seconds = time.perf_counter() - t
    done.set()
    poller.join()
    try:
        message = json.loads(answer).get("error", "")[:70]
    except (ValueError, AttributeError):
        message = ""
    return {"status": status, "seconds": seconds, "health_ms": max(health, default=0) * 1000,
            "peak_mb": _rss(pid, "VmHWM"), "message": message}


def abuse(a) -> None:
    tiny = b'{"rows": [' + b",".join([b'{"a":1}'] * 6_500_000) + b"]}"
    row = "[" + ",".join(["0.5"] * 57) + "]"
    wide = ('{"features": [' + ",".join([row] * 200_000) + "]}").encode()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model = a.model or quick_export(Path(tmp) / "export")
        features = json.loads((model / "model.json").read_text())["features"]
        X = __import__("pandas").read_csv(CSV)[features].to_numpy(np.float64)
        valid = json.dumps({"features": np.resize(X, (10_000, X.shape[1])).tolist()}).encode()
        port = free_port()
        log = open(Path(tmp) / "server.log", "w+")
        proc = start_server(model, port, 1, a.backend, log)
        print(f"gsearch serve (defaults: --max-upload-mb 50 --max-rows 10000); {describe()}; "
              f"server RSS at rest {_rss(proc.pid, 'VmRSS'):.0f} MB")
        print(f"{'body':<44} {'MB':>5} {'status':>6} {'seconds':>8} {'/health max ms':>14} "
              f"{'peak RSS MB':>11}  answer")
        try:
            for name, body in [("50 MB of tiny row objects (6.5 M rows)", tiny),
                               ("200,000 rows of 57 numbers", wide),
                               ("10,000 valid rows (--max-rows)", valid)]:
                r = abuse_cell(port, proc.pid, body)
                print(f"{name:<44} {len(body) / 2**20:>5.1f} {r['status']:>6} {r['seconds']:>8.2f} "
                      f"{r['health_ms']:>14.0f} {r['peak_mb']:>11.0f}  {r['message']}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()


def _multipart_bytes(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _audio_bytes(name: str, rate: int, seconds: float, channels: int = 1, tone: bool = False) -> bytes:
    """An audio file (format from the name's extension) of silence, or with tone=True a 440 Hz
    tone with a little noise (decoded and classified as music, not refused as silent)."""
    import soundfile as sf

    frames = int(rate * seconds)
    if tone:
        t = np.arange(frames, dtype=np.float64) / rate
        y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.001 * np.random.default_rng(0).standard_normal(frames)
        y = np.repeat((y * 32767).astype(np.int16)[:, None], channels, axis=1)
    else:
        y = np.zeros((frames, channels), np.int16)
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        path = Path(tmp) / name
        sf.write(path, y, rate, subtype="PCM_16")
        return path.read_bytes()


def hostile_shapes(valid: bytes, valid_rows: int, n: int) -> list[tuple[str, str, bytes, str]]:
    """(name, route, body, content type) of the worst requests, at the server's defaults, for a
    model of n features: `valid` is the largest valid batch (valid_rows rows)."""
    tiny = b'{"rows": [' + b",".join([b'{"a":1}'] * 6_500_000) + b"]}"
    row = "[" + ",".join(["0.5"] * n) + "]"
    rows = 200_000 if n == 57 else max(1, 46_000_000 // (4 * n))  # about 44 MB
    wide = ('{"features": [' + ",".join([row] * rows) + "]}").encode()
    deep = b'{"features": ' + b"[" * 10_000_000 + b"]" * 10_000_000 + b"}"
    shapes = [("50 MB of tiny row objects", "/predict", tiny, "application/json"),
              (f"{rows:,} rows of {n} numbers", "/predict", wide, "application/json"),
              ("JSON nested 10 M deep", "/predict", deep, "application/json"),
              (f"{valid_rows:,} valid rows", "/predict", valid, "application/json")]
    for name, file, data in [
            ("WAV at 1 Hz", "one-hz.wav", _audio_bytes("one-hz.wav", 1, 100_000)),
            ("WAV at 100 Hz", "slow.wav", _audio_bytes("slow.wav", 100, 1000)),
            ("FLAC, an hour at 8 kHz", "hour.flac", _audio_bytes("hour.flac", 8000, 3600)),
            ("FLAC, 599 s 48 kHz stereo", "long.flac", _audio_bytes("long.flac", 48_000, 599, 2, tone=True))]:
        body, kind = _multipart_bytes(file, data)
        size = f"{len(data) / 2**20:.1f} MB" if len(data) > 2**20 else f"{len(data) / 2**10:.0f} KB"
        shapes.append((f"{name} ({size})", "/predict/audio", body, kind))
    return shapes


def hostile(a) -> int:
    """See the module docstring (--hostile). Returns the exit status: 1 if a bound was broken."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model = a.model or (wide_export(Path(tmp) / "export", a.features) if a.features
                            else quick_export(Path(tmp) / "export"))
        features = json.loads((model / "model.json").read_text())["features"]
        try:
            X = __import__("pandas").read_csv(CSV)[features].to_numpy(np.float64)
        except KeyError:  # not GTZAN's features (--features N): any numbers will do
            X = np.random.default_rng(0).normal(size=(100, len(features)))
        valid_rows = min(10_000, 1_000_000 // len(features))  # --max-rows, --max-values
        valid = json.dumps({"features": np.resize(X, (valid_rows, X.shape[1])).tolist()}).encode()
        shapes = hostile_shapes(valid, valid_rows, len(features))
        port = free_port()
        log = open(Path(tmp) / "server.log", "w+")
        proc = start_server(model, port, 1, a.backend, log)
        rest = _rss(proc.pid, "VmRSS")
        print(f"gsearch serve (defaults: --max-upload-mb 50 --max-rows 10000 --max-values "
              f"1000000), a model of {len(features)} features; {describe()}; "
              f"load average {os.getloadavg()[0]:.2f}; server RSS at rest {rest:.0f} MB")
        print(f"hostile load: {a.hostile:g} s, {a.hostile_clients} clients sending back to back, "
              "/health every 50 ms", flush=True)
        try:
            with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        stop, sending = threading.Event(), threading.Event()
        sending.set()
        lock = threading.Lock()
        answers: dict[str, dict] = {name: {} for name, *_ in shapes}
        seconds: dict[str, list] = {name: [] for name, *_ in shapes}
        health, health_failed, rss, small = [], [], [], []

        def attack(offset: int) -> None:
            i = offset
            while sending.is_set():
                name, path, body, kind = shapes[i % len(shapes)]
                i += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                t = time.perf_counter()
                try:
                    conn.request("POST", path, body, {"Content-Type": kind})
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as e:
                    status = type(e).__name__
                finally:
                    conn.close()
                with lock:
                    answers[name][status] = answers[name].get(status, 0) + 1
                    seconds[name].append(time.perf_counter() - t)

        def poll_health() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    conn.request("GET", "/health")
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException) as e:
                    ok, conn = False, http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    health_failed.append(type(e).__name__)
                (health if ok else health_failed).append(time.perf_counter() - t)
                time.sleep(0.05)
            conn.close()

        def poll_small() -> None:  # what a well-behaved client sees meanwhile: one row, 10 per s
            body = json.dumps({"features": X[:1].tolist()}).encode()
            while not stop.is_set():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                t = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    small.append((response.status, time.perf_counter() - t))
                except (OSError, http.client.HTTPException) as e:
                    small.append((type(e).__name__, time.perf_counter() - t))
                finally:
                    conn.close()
                time.sleep(0.1)

        def sample_rss() -> None:
            while not stop.is_set():
                rss.append(_rss(proc.pid, "VmRSS"))
                time.sleep(0.05)

        attackers = [threading.Thread(target=attack, args=(k * 3,)) for k in range(a.hostile_clients)]
        watchers = [threading.Thread(target=poll_health), threading.Thread(target=poll_small),
                    threading.Thread(target=sample_rss)]
        try:
            t0 = time.perf_counter()
            for th in attackers + watchers:
                th.start()
            time.sleep(a.hostile)
            sending.clear()  # the requests in flight are finished, not cut, and watched meanwhile
            for th in attackers:
                th.join()
            drained = time.perf_counter() - t0
            stop.set()
            for th in watchers:
                th.join()
            peak = _rss(proc.pid, "VmHWM")
        finally:
            sending.clear()
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            log.close()
    print(f"sent for {a.hostile:g} s; the last answer came after {drained:.0f} s (watched until then)")
    print(f"{'shape':<40} {'sent':>5} {'s/answer':>9}  answers by status")
    for name, *_ in shapes:
        counts = answers[name]
        mean = np.mean(seconds[name]) if seconds[name] else float("nan")
        shown = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items(), key=str))
        print(f"{name:<40} {sum(counts.values()):>5} {mean:>9.2f}  {shown}")
    lat = np.array(health) * 1000
    worst = float(lat.max()) if lat.size else float("inf")
    p99 = float(np.percentile(lat, 99)) if lat.size else float("inf")
    print(f"/health: {lat.size} answers, max {worst:.0f} ms, p99 {p99:.0f} ms, p50 "
          f"{np.percentile(lat, 50) if lat.size else float('nan'):.0f} ms, failed {len(health_failed)}")
    ok = np.array([t for status, t in small if status == 200]) * 1000
    print(f"one-row POST /predict every 100 ms: {len(small)} sent, {ok.size} answered 200, max "
          f"{ok.max() if ok.size else float('nan'):.0f} ms, p99 "
          f"{np.percentile(ok, 99) if ok.size else float('nan'):.0f} ms, p50 "
          f"{np.percentile(ok, 50) if ok.size else float('nan'):.0f} ms")
    print(f"server RSS: at rest {rest:.0f} MB, peak {peak:.0f} MB (VmHWM; sampled max "
          f"{max(rss, default=float('nan')):.0f} MB), bound {a.max_rss_mb:g} MB; load average at the "
          f"end {os.getloadavg()[0]:.2f}")
    broken = []
    if health_failed or worst > 1000:
        broken.append(f"/health took {worst:.0f} ms (bound 1000 ms), {len(health_failed)} failed")
    if peak > a.max_rss_mb:
        broken.append(f"peak RSS {peak:.0f} MB over the {a.max_rss_mb:g} MB bound")
    print("FAIL: " + "; ".join(broken) if broken else "PASS: /health always under 1 s, RSS within the bound")
    return 1 if broken else 0


def describe() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit or '?'}, "
            f"{os.cpu_count()} CPU(s) {cpu}, python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="an export folder (default: train a small one)")
    ap.add_argument("--clients", default="1,8,32", help="concurrent clients per cell, comma-separated")
    ap.add_argument("--workers", type=int, default=1, help="server processes (gsearch serve --workers)")
    ap.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    ap.add_argument("--rows-requests", type=int, default=400, help="requests per single-row cell")
    ap.add_argument("--batch-requests", type=int, default=100, help="requests per 100-row cell")
    ap.add_argument("--audio-requests", type=int, default=4,
                    help="requests per audio cell (at least one per client)")
    ap.add_argument("--abuse", action="store_true",
                    help="measure oversized JSON bodies instead (see above)")
    ap.add_argument("--hostile", type=float, metavar="SECONDS",
                    help="hostile load for SECONDS seconds instead (see above)")
    ap.add_argument("--hostile-clients", type=int, default=4, help="clients sending the worst shapes")
    ap.add_argument("--features", type=int, metavar="N",
                    help="--hostile without --model: an untrained model of N features (a wide "
                         "model: --features 20000) instead of a small one trained on GTZAN")
    ap.add_argument("--max-rss-mb", type=float, default=1024,
                    help="--hostile fails if the server's peak RSS goes over this")
    a = ap.parse_args()
    if a.abuse:
        return abuse(a)
    if a.hostile:
        sys.exit(hostile(a))
    clients = [int(c) for c in a.clients.split(",")]
    import pandas as pd

    frame = pd.read_csv(CSV)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model = a.model or quick_export(Path(tmp) / "export")
        features = json.loads((model / "model.json").read_text())["features"]
        X = frame[features].to_numpy(np.float64)
        one = json.dumps({"features": X[:1].tolist()}).encode()
        batch = json.dumps({"features": X[:100].tolist()}).encode()
        audio, audio_type = multipart(CLIP)
        port = free_port()
        log = open(Path(tmp) / "server.log", "w+")
        t = time.perf_counter()
        proc = start_server(model, port, a.workers, a.backend, log)
        print(f"gsearch serve --workers {a.workers} --backend {a.backend}: ready (audio warm) in "
              f"{time.perf_counter() - t:.1f} s; {describe()}")
        workloads = [("1 row", "/predict", one, "application/json", a.rows_requests),
                     ("100 rows", "/predict", batch, "application/json", a.batch_requests),
                     (f"audio 30 s ({CLIP.name})", "/predict/audio", audio, audio_type, a.audio_requests)]
        print(f"{'workload':<30} {'clients':>7} {'requests':>8} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}")
        try:
            for name, path, body, kind, n in workloads:
                run_cell(port, path, body, kind, 1, 2)  # keep-alive connection and caches warm
                for c in clients:
                    r = run_cell(port, path, body, kind, c, max(n, c))
                    print(f"{name:<30} {c:>7} {r['requests']:>8} {r['rps']:>9.1f} {r['p50']:>9.1f} "
                          f"{r['p99']:>9.1f} {r['errors']:>6}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()


if __name__ == "__main__":
    main()
