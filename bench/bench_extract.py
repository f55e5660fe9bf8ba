"""Seconds per 30-second clip through `gsearch extract`, run as a user runs it (a new process).

first: one clip, a new process (imports + the clip)
again: the same command again (the operating system's file cache is warm)
jobs:  N copies of the clips (default 6, in a temporary folder) with --jobs 1 and --jobs 2,
       alternating: seconds per clip and the --jobs 2 speedup (fastest of --repeat)
Usage: python bench/bench_extract.py [--clip PATH ...] [--files N] [--repeat R]
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_audio import CLIPS


def gsearch() -> list[str]:
    script = Path(sys.executable).with_name("gsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gsearch"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def extract(paths, out: Path, jobs: int = 1) -> tuple[float, float]:
    """(wall, cpu) seconds of one `gsearch extract` process and its workers."""
    cmd = [*gsearch(), "extract", *map(str, paths), "--out", str(out), "--jobs", str(jobs)]
    t, c = time.perf_counter(), _cpu()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return time.perf_counter() - t, _cpu() - c


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", help="a 30 s audio file (repeatable); default: the two shared GTZAN clips")
    ap.add_argument("--files", type=int, default=6, help="files in the --jobs comparison")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each --jobs setting (fastest shown)")
    a = ap.parse_args()
    clips = [Path(c) for c in a.clip or CLIPS]
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        cold = extract(clips[:1], tmp / "cold.csv")
        warm = extract(clips[:1], tmp / "warm.csv")
        folder = tmp / "clips"
        folder.mkdir()
        for i in range(a.files):  # copies under new names: temporary, never in the repository
            clip = clips[i % len(clips)]
            shutil.copy(clip, folder / f"copy{i}_{clip.name}")
        runs = {1: [], 2: []}
        for _ in range(a.repeat):
            for jobs in runs:
                runs[jobs].append(extract([folder], tmp / f"jobs{jobs}.csv", jobs))
    (one, one_cpu), (two, two_cpu) = (min(runs[j], key=lambda r: r[0]) for j in (1, 2))
    print(f"gsearch extract, clip {clips[0].name}, cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} (wall seconds; cpu seconds in brackets)")
    print(f"first {cold[0]:6.2f} s [{cold[1]:6.2f}] for one clip (new process)")
    print(f"again {warm[0]:6.2f} s [{warm[1]:6.2f}] for one clip (new process)")
    print(f"jobs1 {one:6.2f} s [{one_cpu:6.2f}] for {a.files} clips = {one / a.files:5.2f} s per clip")
    print(f"jobs2 {two:6.2f} s [{two_cpu:6.2f}] for {a.files} clips = {two / a.files:5.2f} s per clip"
          f"  (speedup {one / two:.2f}x)")
