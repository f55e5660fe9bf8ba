"""Seconds per 30-second clip for gsearch.data.audio.extract_file.

cold: a fresh process with an empty numba cache (import + first clip, numba compiles)
warm: a second fresh process on the cache the first one filled (import + first clip)
steady: later clips in one process
Usage: python bench/bench_audio.py [--clip PATH ...] [--repeat N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GTZAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan" / "genres_original"
CLIPS = [GTZAN / "blues" / "blues.00000.wav", GTZAN / "classical" / "classical.00000.wav"]


def child(clips: list[str], repeat: int) -> None:
    t0 = time.perf_counter()
    from gsearch.data.audio import extract_file
    t1 = time.perf_counter()
    extract_file(clips[0])
    t2 = time.perf_counter()
    steady = []
    for _ in range(repeat):
        for c in clips:
            t = time.perf_counter()
            extract_file(c)
            steady.append(time.perf_counter() - t)
    print(json.dumps({"import": t1 - t0, "first": t2 - t1, "steady": steady}))


def run(clips: list[str], repeat: int, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    cmd = [sys.executable, __file__, "--child", "--repeat", str(repeat), *sum((["--clip", c] for c in clips), [])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", help="audio file (repeatable); default: the two shared GTZAN clips")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the clips for the steady figure")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    clips = a.clip or [str(c) for c in CLIPS]
    if a.child:
        child(clips, a.repeat)
        sys.exit()
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        cold = run(clips, 0, cache)
        warm = run(clips, a.repeat, cache)
    s = sorted(warm["steady"])
    print(f"clip(s): {', '.join(Path(c).name for c in clips)}  (cpu count {os.cpu_count()})")
    print(f"cold   import {cold['import']:6.2f} s + first clip {cold['first']:6.2f} s  (empty numba cache)")
    print(f"warm   import {warm['import']:6.2f} s + first clip {warm['first']:6.2f} s  (second process, numba cache filled)")
    print(f"steady {s[len(s) // 2]:6.2f} s per clip (median of {len(s)}, min {s[0]:.2f}, max {s[-1]:.2f}, same process)")
