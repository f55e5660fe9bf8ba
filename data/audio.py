"""Audio file -> the 57 features of the Kaggle "GTZAN Dataset - Music Genre Classification" CSVs.

The Kaggle CSVs were made with an older librosa (< 0.10) whose STFT padded the signal with
pad_mode="reflect" (librosa >= 0.10 pads with zeros) and whose effects.hpss inverted the STFT
without length= (istft, then fix_length with zeros). With those two details restored, librosa 0.11
reproduces features_30_sec.csv to float32 precision. All spectral features share one STFT
(n_fft=2048, hop_length=512, hann, center=True); means and variances are numpy's over frames
(harmony/perceptr: over samples).
"""
import os
from pathlib import Path

# numba compiles librosa's kernels on first use (~20 s); cache them on disk for later processes.
# Must be set before numba is first imported; a value set by the user wins.
_CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
os.environ.setdefault("NUMBA_CACHE_DIR", str(_CACHE_HOME / "gsearch" / "numba"))

import audioread
import librosa
import numpy as np
import soundfile as sf

from gsearch import GsearchError
from gsearch.data.schema import FEATURE_NAMES, SAMPLE_RATE

_SR = SAMPLE_RATE
_N_FFT, _HOP = 2048, 512
_SILENCE_PEAK = 1e-4  # about 3 LSB of 16-bit audio: below this everywhere, the signal is silent
_AUDIO_EXTS = {".wav", ".au", ".snd", ".aif", ".aiff", ".flac", ".ogg", ".oga", ".opus", ".mp3",
               ".m4a", ".aac", ".wma"}


class AudioError(GsearchError):
    """An audio file (or signal) that cannot be turned into features; the message names the file."""


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and native rate: soundfile first, audioread (ffmpeg, ...) second."""
    try:
        y, sr = sf.read(path, dtype="float32", always_2d=True)
        return y, sr
    except Exception as e:
        sf_err = e
    try:
        with audioread.audio_open(str(path)) as f:
            sr, ch = f.samplerate, f.channels
            pcm = np.frombuffer(b"".join(f), dtype="<i2")
        return (pcm.astype(np.float32) / 32768).reshape(-1, ch), sr
    except audioread.NoBackendError:
        if path.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff", ".aif"}:
            raise AudioError(f"{path}: corrupt or undecodable ({str(sf_err).strip()})") from None
        raise AudioError(f"{path}: unsupported format {path.suffix!r} (no decoder; install ffmpeg)") from None
    except Exception as e:
        raise AudioError(f"{path}: corrupt or undecodable ({type(e).__name__}: {e})") from None


def load_audio(path: str | os.PathLike, sr: int = _SR) -> np.ndarray:
    """Mono float32 signal at sample rate sr (like librosa.load). Raises AudioError."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    y, native = _decode(path)
    y = y.mean(axis=1)
    if y.size == 0:
        raise AudioError(f"{path}: empty (no audio samples)")
    if native != sr:
        y = librosa.resample(y, orig_sr=native, target_sr=sr)
    return y.astype(np.float32, copy=False)


def _check(y: np.ndarray) -> None:
    if y.size < _N_FFT:
        raise AudioError(f"too short ({y.size} samples, need {_N_FFT})")
    if not np.isfinite(y).all():
        raise AudioError("signal has NaN or inf samples")
    if np.abs(y).max() < _SILENCE_PEAK:
        raise AudioError("silent (all samples near zero)")


def extract_features(y: np.ndarray, sr: int = _SR) -> dict[str, float]:
    """The 57 GTZAN features of a mono signal, in CSV column order. Raises AudioError."""
    y = np.asarray(y, dtype=np.float32)
    _check(y)
    D = librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP, pad_mode="reflect")
    S = np.abs(D)
    P = S**2
    H, Pc = librosa.decompose.hpss(D)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=P, sr=sr))  # what mfcc() and onset_strength() compute
    inv = lambda X: librosa.util.fix_length(librosa.istft(X, hop_length=_HOP, dtype=y.dtype), size=y.size)
    series = {
        "chroma_stft": librosa.feature.chroma_stft(S=P, sr=sr),
        "rms": librosa.feature.rms(y=y, frame_length=_N_FFT, hop_length=_HOP, pad_mode="reflect"),
        "spectral_centroid": librosa.feature.spectral_centroid(S=S, sr=sr),
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(S=S, sr=sr),
        "rolloff": librosa.feature.spectral_rolloff(S=S, sr=sr),
        "zero_crossing_rate": librosa.feature.zero_crossing_rate(y, frame_length=_N_FFT, hop_length=_HOP),
        "harmony": inv(H),
        "perceptr": inv(Pc),
    }
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=20)
    # beat_track's tempo: its onset envelope takes the median over mel bands, not the mean
    onset = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=_HOP, aggregate=np.median)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=_HOP)
    out: dict[str, float] = {}
    for k, x in series.items():
        out[f"{k}_mean"], out[f"{k}_var"] = float(np.mean(x)), float(np.var(x))
    out["tempo"] = float(tempo[0])
    for i, row in enumerate(mfcc, 1):
        out[f"mfcc{i}_mean"], out[f"mfcc{i}_var"] = float(np.mean(row)), float(np.var(row))
    if not all(np.isfinite(v) for v in out.values()):
        raise AudioError("features are not finite")
    return {k: out[k] for k in FEATURE_NAMES}


def extract_file(path: str | os.PathLike, segment_seconds: float | None = None) -> list[tuple[str, int, dict[str, float]]]:
    """[(row filename, length in samples, features)]: one row for the whole file, or one per
    consecutive segment named like the Kaggle 3-sec CSV (blues.00000.3.wav); a short tail is
    dropped and so are silent segments (their index is skipped). Raises AudioError.

    Like the Kaggle features_3_sec.csv, segment K is y[K*n : K*n + n - 1] with n = segment_seconds
    * 22050: its rows are 66149 samples long, 3 s steps less one sample (this reproduces its values)."""
    n = None if segment_seconds is None else int(round(segment_seconds * _SR))
    if n is not None and n <= _N_FFT:
        raise GsearchError(f"--segment-seconds {segment_seconds} is too short; use at least "
                           f"{_N_FFT / _SR:.2f} (for example 3 or 30)")
    return extract_signal(load_audio(path), path, n)


def extract_signal(y: np.ndarray, path: str | os.PathLike, step: int | None = None) -> list[tuple[str, int, dict[str, float]]]:
    """extract_file's rows for a signal already loaded from path: the whole signal when step is
    None, else segments y[K*step : K*step + step - 1] (step in samples). Raises AudioError."""
    path = Path(path)
    if step is None:
        segs = [(path.name, y)]
    else:
        segs = [(f"{path.stem}.{k}{path.suffix}", y[s:s + step - 1]) for k, s in enumerate(range(0, y.size - step + 2, step))]
        if not segs:
            raise AudioError(f"{path}: too short for one {step / _SR:g} s segment ({y.size / _SR:.2f} s)")
        segs = [(name, s) for name, s in segs if np.abs(s).max() >= _SILENCE_PEAK] or segs[:1]  # all silent: fail below
    try:
        return [(name, s.size, extract_features(s)) for name, s in segs]
    except AudioError as e:
        raise AudioError(f"{path}: {e}") from None


def label_from_path(path: str | os.PathLike, genres) -> str:
    """The parent folder's name if it is one of genres (GTZAN layout genres_original/<genre>/<file>), else ""."""
    parent = Path(path).parent.name
    return parent if parent in genres else ""


def iter_audio_files(paths) -> list[Path]:
    """Audio files among paths, folders expanded recursively; sorted, without duplicates."""
    found = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _AUDIO_EXTS)
        elif p.is_file():
            if p.suffix.lower() in _AUDIO_EXTS:
                found.add(p)
        else:
            raise AudioError(f"{p}: no such file or folder")
    return sorted(found)
