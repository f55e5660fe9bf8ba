"""Throughput and latency of `gsearch serve` on loopback.

Starts the real server (python -m gsearch.search.cli serve) on a free port of 127.0.0.1, waits
until it is ready (audio warm-up included), then for each workload and each number of
concurrent clients sends a fixed number of requests and prints requests/s and p50/p99 latency.
Workloads: one feature row per POST /predict, 100 rows per POST /predict, one 30-second GTZAN
clip per POST /predict/audio. Each client is a thread with its own keep-alive connection; the
clients run on the same machine as the server and take some of its CPU. Stops the server itself.

Usage: python bench/bench_serve.py [--model EXPORT_DIR] [--clients 1,8,32] [--workers N]
       [--backend onnx|torch] [--rows-requests 400] [--batch-requests 100] [--audio-requests 4]
       python bench/bench_serve.py --abuse [--model EXPORT_DIR]
Without --model, a small model is trained on the real features_30_sec.csv (a few seconds).

--abuse: the cost of oversized JSON bodies (the server at its defaults: --max-upload-mb 50,
--max-rows 10000). For each body it sends one POST /predict and meanwhile polls GET /health every
50 ms on another connection; it prints the status and seconds of the bad request, the slowest
/health answer during it, and the server process's peak RSS while it ran (VmHWM, reset before
each body through /proc/PID/clear_refs). Bodies: 50 MB of tiny row objects ({"rows": [{"a":1},
...]}, 6.5 M rows), 200,000 rows of 57 numbers ({"features": [[0.5, ...], ...]}, 44 MB), and
for reference a valid batch of 10,000 rows.
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"
CSV = SHARED / "features_30_sec.csv"
CLIP = SHARED / "genres_original" / "blues" / "blues.00000.wav"


def quick_export(out: Path) -> Path:
    import torch

    from gsearch.data.load import load_dataset
    from gsearch.data.schema import FEATURE_NAMES
    from gsearch.models.config import TrialConfig
    from gsearch.models.export import save_model
    from gsearch.models.population import TrainData, train

    torch.set_num_threads(1)
    ds = load_dataset(CSV)
    config = TrialConfig(n_layers=2, width=256, dropout=0.1, lr=1e-3, epochs=20)
    model, _ = train(config, TrainData(ds.X, ds.y, len(ds.classes)))
    save_model(model, config, ds.classes, FEATURE_NAMES, out, {"clip_samples": ds.clip_samples})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, workers: int, backend: str, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gsearch.search.cli", "serve", "--model", str(model), "--port",
           str(port), "--workers", str(workers), "--backend", backend]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if json.loads(conn.getresponse().read()).get("audio_ready"):
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
    a = ap.parse_args()
    if a.abuse:
        return abuse(a)
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
