"""Throughput and latency of `gsearch serve` on loopback.

Starts the real server (python -m gsearch.search.cli serve) on a free port of 127.0.0.1, waits
until it is ready (audio warm-up included), then for each workload and each number of
concurrent clients sends a fixed number of requests and prints requests/s and p50/p99 latency.
Workloads: one feature row per POST /predict, 100 rows per POST /predict, one 30-second GTZAN
clip per POST /predict/audio. Each client is a thread with its own keep-alive connection; the
clients run on the same machine as the server and take some of its CPU. Stops the server itself.

Usage: python bench/bench_serve.py [--model EXPORT_DIR] [--clients 1,8,32] [--workers N]
       [--backend onnx|torch] [--rows-requests 400] [--batch-requests 100] [--audio-requests 4]
Without --model, a small model is trained on the real features_30_sec.csv (a few seconds).
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
    a = ap.parse_args()
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
