"""Seconds per 30-second clip for gsearch.data.audio.extract_file, and its parity with librosa.

first:  a fresh process (import + first clip)
steady: later clips in the same process
--parity: also compute the features with librosa 0.11 (the calls gsearch.data.audio reproduces in
          numpy) and print how many of the 57 values are identical and the largest relative
          difference; this imports librosa (numba compiles its kernels: slow the first time)
Usage: python bench/bench_audio.py [--clip PATH ...] [--repeat N] [--parity]
"""
import argparse
import json
import os
import subprocess
import sys
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


def run(clips: list[str], repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--repeat", str(repeat), *sum((["--clip", c] for c in clips), [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def librosa_features(y, sr: int = 22050) -> dict[str, float]:
    """The 57 features with librosa 0.11 and the Kaggle settings (reflect-padded STFT, istft
    without length=, beat_track's median-over-bands onset envelope)."""
    import librosa
    import numpy as np

    D = librosa.stft(y, n_fft=2048, hop_length=512, pad_mode="reflect")
    S = np.abs(D)
    P = S**2
    H, Pc = librosa.decompose.hpss(D)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=P, sr=sr))
    inv = lambda X: librosa.util.fix_length(librosa.istft(X, hop_length=512, dtype=y.dtype), size=y.size)
    series = {
        "chroma_stft": librosa.feature.chroma_stft(S=P, sr=sr),
        "rms": librosa.feature.rms(y=y, frame_length=2048, hop_length=512, pad_mode="reflect"),
        "spectral_centroid": librosa.feature.spectral_centroid(S=S, sr=sr),
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(S=S, sr=sr),
        "rolloff": librosa.feature.spectral_rolloff(S=S, sr=sr),
        "zero_crossing_rate": librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512),
        "harmony": inv(H),
        "perceptr": inv(Pc),
    }
    onset = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=512, aggregate=np.median)
    out = {"tempo": float(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=512)[0])}
    for k, x in series.items():
        out[f"{k}_mean"], out[f"{k}_var"] = float(np.mean(x)), float(np.var(x))
    for i, row in enumerate(librosa.feature.mfcc(S=mel_db, n_mfcc=20), 1):
        out[f"mfcc{i}_mean"], out[f"mfcc{i}_var"] = float(np.mean(row)), float(np.var(row))
    return out


def parity(clips: list[str]) -> None:
    from gsearch.data.audio import extract_features, load_audio

    for clip in clips:
        y = load_audio(clip)
        for name, part in ((Path(clip).name, y), ("  its first 3 s", y[:66149])):
            ours, ref = extract_features(part), librosa_features(part)
            rel = {k: abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ours}
            worst = max(rel, key=rel.get)
            print(f"parity {name}: {sum(ours[k] == ref[k] for k in ours)}/57 identical to librosa, "
                  f"largest relative difference {rel[worst]:.1e} ({worst})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", help="audio file (repeatable); default: the two shared GTZAN clips")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the clips for the steady figure")
    ap.add_argument("--parity", action="store_true", help="compare the values with librosa's")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    clips = a.clip or [str(c) for c in CLIPS]
    if a.child:
        child(clips, a.repeat)
        sys.exit()
    timed = run(clips, a.repeat)
    s = sorted(timed["steady"])
    print(f"clip(s): {', '.join(Path(c).name for c in clips)}  (cpu count {os.cpu_count()})")
    print(f"first  import {timed['import']:6.2f} s + first clip {timed['first']:6.2f} s  (new process)")
    print(f"steady {s[len(s) // 2]:6.2f} s per clip (median of {len(s)}, min {s[0]:.2f}, max {s[-1]:.2f}, same process)")
    if a.parity:
        parity(clips)
