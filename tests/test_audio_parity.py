"""gsearch.data.audio (a numpy/scipy port of librosa 0.11's feature code) against librosa 0.11
itself: all 57 features, on audio synthesized here, so that the check runs without the GTZAN
clips of ../shared (tests/test_audio.py checks the Kaggle table's values on those).

Tolerance: none. The port performs librosa's operations in the same order and dtypes with the
same numpy and scipy (pinned in requirements.txt), and every value has come out bit-identical
to librosa's on every case here (and on the GTZAN clips, bench/bench_audio.py --parity). A
tolerance would hide real faults: with the Hann window rounded to float32, 20 values change,
none by more than 1e-6 relative. Only a numpy/scipy upgrade that changes the rounding of one
side and not the other would be a reason to loosen it, to about float32 rounding (absolute for
harmony_mean and perceptr_mean, means near zero); anything more is a port that no longer does
what librosa does.

The first librosa call compiles librosa's numba kernels (about 16 s on 2 cores without numba's
cache, under 2 s with it); each case after that costs a fraction of a second.
"""
from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf
from conftest import require_module, skip_or_fail

from gsearch.data.audio import extract_features, extract_file, load_audio
from gsearch.data.schema import FEATURE_NAMES

pytestmark = pytest.mark.slow   # librosa's reference features (15 s)

SR = 22050
SEGMENT = 3 * SR   # extract_file(segment_seconds=3): rows of 3 s less one sample, as in Kaggle's table


def chord(seconds: float, sr: int, *, bpm: float, detune: float, seed: int) -> np.ndarray:
    """An A major chord (four notes of five harmonics, detuned by `detune` semitones so that
    the tuning estimate behind chroma is not 0) whose loudness pulses at `bpm`, a noise burst
    on every beat (percussive) and a little steady noise (zero crossings); float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for semitones in (0, 4, 7, 12):
        f0 = 220.0 * 2 ** ((semitones + detune) / 12)
        for h in range(1, 6):
            y += (0.3 / h) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    phase = (t * bpm / 60) % 1.0          # position within the beat, 0..1
    y *= (0.2 + np.exp(-8 * phase)) / 4
    y += 0.05 * rng.standard_normal(t.size) * np.exp(-30 * phase)
    y += 0.01 * rng.standard_normal(t.size)
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def librosa():
    librosa = require_module("librosa", "needs librosa 0.11 to compare against")
    if not librosa.__version__.startswith("0.11."):
        skip_or_fail(f"librosa {librosa.__version__} is installed, the port reproduces 0.11; "
                     "pip install -r requirements-dev.txt")
    return librosa


@pytest.fixture(scope="module")
def reference(librosa):
    """reference(y, sr) -> the 57 features computed by librosa 0.11 with the Kaggle settings
    (docs/audio.md): reflect-padded STFT, istft without length= then zero-padded to the signal's
    length, and beat_track's tempo (onset envelope: median over mel bands)."""
    def features(y: np.ndarray, sr: int = SR) -> dict[str, float]:
        D = librosa.stft(y, n_fft=2048, hop_length=512, pad_mode="reflect")
        S = np.abs(D)
        P = S**2
        H, Pc = librosa.decompose.hpss(D)
        mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=P, sr=sr))
        def inverse(X):
            return librosa.util.fix_length(librosa.istft(X, hop_length=512, dtype=y.dtype), size=y.size)
        series = {
            "chroma_stft": librosa.feature.chroma_stft(S=P, sr=sr),
            "rms": librosa.feature.rms(y=y, frame_length=2048, hop_length=512, pad_mode="reflect"),
            "spectral_centroid": librosa.feature.spectral_centroid(S=S, sr=sr),
            "spectral_bandwidth": librosa.feature.spectral_bandwidth(S=S, sr=sr),
            "rolloff": librosa.feature.spectral_rolloff(S=S, sr=sr),
            "zero_crossing_rate": librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512),
            "harmony": inverse(H),
            "perceptr": inverse(Pc),
        }
        out = {}
        for k, x in series.items():
            out[f"{k}_mean"], out[f"{k}_var"] = float(np.mean(x)), float(np.var(x))
        onset = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=512, aggregate=np.median)
        out["tempo"] = float(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=512)[0])
        for i, row in enumerate(librosa.feature.mfcc(S=mel_db, n_mfcc=20), 1):
            out[f"mfcc{i}_mean"], out[f"mfcc{i}_var"] = float(np.mean(row)), float(np.var(row))
        return out
    return features


def assert_same_features(ours: dict[str, float], ref: dict[str, float], case: str) -> None:
    assert tuple(ours) == FEATURE_NAMES and set(ref) == set(FEATURE_NAMES)
    # the synthesized audio exercises every feature: finite, and none constant over frames
    assert all(np.isfinite(v) for v in ref.values()), ref
    assert all(ref[k] > 0 for k in FEATURE_NAMES if k.endswith("_var")), ref
    differ = [k for k in FEATURE_NAMES if ours[k] != ref[k]]
    assert not differ, f"{case}: {len(differ)} of 57 features differ from librosa 0.11's: " + "; ".join(
        f"{k} {ours[k]!r} vs {ref[k]!r} (relative {abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-30):.1e})"
        for k in differ)


def test_features_match_librosa_at_22050_hz(reference):
    y = chord(6.0, SR, bpm=100, detune=0.23, seed=0)
    ours, ref = extract_features(y), reference(y)
    assert ours["tempo"] == ref["tempo"] == pytest.approx(100, rel=0.05)   # the pulse is found
    assert_same_features(ours, ref, "6 s at 22050 Hz")


def test_features_match_librosa_at_another_rate(reference):
    # extract_features' sr: the mel and chroma filters, the tuning and the tempo depend on it
    y = chord(5.0, 16000, bpm=120, detune=-0.31, seed=1)
    assert_same_features(extract_features(y, sr=16000), reference(y, 16000), "5 s at 16000 Hz")


def test_resampled_stereo_file_matches_librosa_load(reference, librosa, tmp_path):
    # a 44.1 kHz stereo file: load_audio mixes to mono and resamples with soxr as librosa.load does
    left = chord(5.0, 44100, bpm=140, detune=0.1, seed=2)
    right = chord(5.0, 44100, bpm=140, detune=0.4, seed=3)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    y_ref, sr = librosa.load(path, sr=SR)
    y = load_audio(path)
    assert sr == SR and y.dtype == y_ref.dtype == np.float32 and y.shape == y_ref.shape == (5 * SR,)
    assert np.array_equal(y, y_ref), f"largest difference {np.abs(y - y_ref).max():.1e}"
    [(name, length, ours)] = extract_file(path)
    assert (name, length) == ("stereo44k.wav", 5 * SR)
    assert_same_features(ours, reference(y_ref), "44100 Hz stereo file")


def test_3_second_segments_match_librosa(reference, librosa, tmp_path):
    path = tmp_path / "blues.00042.wav"
    sf.write(path, chord(6.5, SR, bpm=90, detune=0.0, seed=4), SR, subtype="PCM_16")
    rows = extract_file(path, segment_seconds=3)
    assert [(name, length) for name, length, _ in rows] == [("blues.00042.0.wav", SEGMENT - 1),
                                                           ("blues.00042.1.wav", SEGMENT - 1)]
    y_ref, _ = librosa.load(path, sr=SR)
    for k, (name, _, ours) in enumerate(rows):
        assert_same_features(ours, reference(y_ref[k * SEGMENT:(k + 1) * SEGMENT - 1]), name)
