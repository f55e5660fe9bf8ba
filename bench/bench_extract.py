"""Seconds per 30-second clip through `gsearch extract`, run as a user runs it (a new process).

cold: one clip, empty numba cache (import + numba compiles + the clip)
warm: the same command again, cache filled (import + cache load + the clip)
jobs: N copies of the clips (default 6, in a temporary folder) with --jobs 1 and --jobs 2,
      alternating, warm cache: seconds per clip and the --jobs 2 speedup
Usage: python bench/bench_extract.py [--clip PATH ...] [--files N] [--repeat R]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_audio import CLIPS


def gsearch() -> list[str]:
    script = Path(sys.executable).with_name("gsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gsearch.search.cli"]


def extract(paths, out: Path, cache: str, jobs: int = 1) -> float:
    cmd = [*gsearch(), "extract", *map(str, paths), "--out", str(out), "--jobs", str(jobs)]
    t = time.perf_counter()
    subprocess.run(cmd, env=dict(os.environ, NUMBA_CACHE_DIR=cache), check=True, capture_output=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", help="a 30 s audio file (repeatable); default: the two shared GTZAN clips")
    ap.add_argument("--files", type=int, default=6, help="files in the --jobs comparison")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each --jobs setting (median shown)")
    a = ap.parse_args()
    clips = [Path(c) for c in a.clip or CLIPS]
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp, cache = Path(tmp), str(Path(tmp) / "numba-cache")
        cold = extract(clips[:1], tmp / "cold.csv", cache)
        warm = extract(clips[:1], tmp / "warm.csv", cache)
        folder = tmp / "clips"
        folder.mkdir()
        for i in range(a.files):  # copies under new names: temporary, never in the repository
            clip = clips[i % len(clips)]
            shutil.copy(clip, folder / f"copy{i}_{clip.name}")
        runs = {1: [], 2: []}
        for _ in range(a.repeat):
            for jobs in runs:
                runs[jobs].append(extract([folder], tmp / f"jobs{jobs}.csv", cache, jobs))
    one, two = statistics.median(runs[1]), statistics.median(runs[2])
    print(f"gsearch extract, clip {clips[0].name}, cpu count {os.cpu_count()}")
    print(f"cold  {cold:6.2f} s for one clip (new process, empty numba cache)")
    print(f"warm  {warm:6.2f} s for one clip (new process, numba cache filled)")
    print(f"jobs1 {one:6.2f} s for {a.files} clips = {one / a.files:5.2f} s per clip")
    print(f"jobs2 {two:6.2f} s for {a.files} clips = {two / a.files:5.2f} s per clip  (speedup {one / two:.2f}x)")
