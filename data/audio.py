"""Audio file -> the 57 features of the Kaggle "GTZAN Dataset - Music Genre Classification" CSVs.

The Kaggle CSVs were made with librosa < 0.10. This module computes the same features with numpy
and scipy, operation for operation as librosa 0.11 does with the Kaggle settings, so it gives
librosa's values (to float32 rounding) without importing librosa, whose numba kernels cost
seconds to load in every new process (and tens of seconds to compile the first time). Kaggle's
settings, as far as they differ from librosa 0.11's defaults:

- the STFT pads the signal with pad_mode="reflect" (librosa >= 0.10 pads with zeros);
- HPSS inverts the STFT without length= (istft, then fix_length with zeros);
- tempo is beat_track's: its onset envelope is the median over mel bands (onset_strength's
  default is the mean, which gives another tempo on some clips, e.g. 107.7 instead of 68.0 BPM).

All spectral features share one STFT (n_fft=2048, hop_length=512, periodic Hann window,
center=True); means and variances are numpy's over frames (harmony/perceptr: over samples).
"""
import functools
import os
from pathlib import Path

import audioread
import numpy as np
import scipy.fft
import scipy.ndimage
import soundfile as sf
import soxr

from gsearch import GsearchError
from gsearch.data.schema import FEATURE_NAMES, SAMPLE_RATE

_SR = SAMPLE_RATE
_N_FFT, _HOP = 2048, 512
_SILENCE_PEAK = 1e-4  # about 3 LSB of 16-bit audio: below this everywhere, the signal is silent
# extension -> libsndfile format (read by soundfile); other audio extensions need ffmpeg (audioread)
_SOUNDFILE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG",
                      ".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF", ".au": "AU", ".snd": "AU"}
_FFMPEG_EXTS = {".m4a", ".aac", ".wma"}
_AUDIO_EXTS = set(_SOUNDFILE_FORMATS) | _FFMPEG_EXTS
SUPPORTED_EXTENSIONS = ", ".join(sorted(_AUDIO_EXTS))


class AudioError(GsearchError):
    """An audio file (or signal) that cannot be turned into features; the message names the file."""


# ---- decoding ----------------------------------------------------------------------------------

def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether path has an audio extension gsearch reads (see SUPPORTED_EXTENSIONS)."""
    return Path(path).suffix.lower() in _AUDIO_EXTS


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and native rate: soundfile (libsndfile) for the formats it
    reads, audioread (ffmpeg) for the others."""
    ext = path.suffix.lower()
    if not is_audio_file(path):
        raise AudioError(f"{path}: not a supported audio file type ({ext or 'no extension'}); "
                         f"use one of {SUPPORTED_EXTENSIONS}")
    if _SOUNDFILE_FORMATS.get(ext) in sf.available_formats():
        try:
            y, sr = sf.read(path, dtype="float32", always_2d=True)
            return y, sr
        except Exception:
            raise AudioError(f"{path}: not a readable audio file (corrupt, or not {ext} audio)") from None
    # audioread's own reader only knows WAV/AIFF/AU, which libsndfile reads: without ffmpeg (or
    # another decoder it drives), nothing here can decode the file
    if not any(b.__name__ != "RawAudioFile" for b in audioread.available_backends()):
        raise AudioError(f"{path}: cannot decode {ext} files without ffmpeg; install ffmpeg "
                         f"(or convert the file to .wav or .flac)")
    try:
        with audioread.audio_open(str(path)) as f:
            sr, ch = f.samplerate, f.channels
            pcm = np.frombuffer(b"".join(f), dtype="<i2")
    except Exception:
        raise AudioError(f"{path}: not a readable audio file (corrupt, or not {ext} audio)") from None
    return (pcm.astype(np.float32) / 32768).reshape(-1, ch), sr


DEFAULT_MAX_AUDIO_SECONDS = 600.0          # longest audio check_audio_header lets through
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 192_000
_MAX_DECODED = 600 * 48_000 * 2            # samples (frames x channels): 10 min of 48 kHz stereo


class AudioLimitError(AudioError):
    """Audio refused from its header before decoding. kind: "length" (too long or too many
    samples to decode) or "rate" (a sample rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def check_audio_header(path: str | os.PathLike, *,
                       max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS) -> int | None:
    """Refuse, from the file's header alone, audio that would cost too much to decode, resample
    and extract: longer than max_seconds, a sample rate outside 4-192 kHz, or more samples
    (frames x channels) than 10 minutes of 48 kHz stereo. Raises AudioLimitError; a file whose
    header cannot be read passes (load_audio then says what is wrong with it). Cheap: reads the
    header (soundfile.info; audioread opens ffmpeg formats without decoding them). Returns the
    samples to decode (frames x channels), None when the header could not be read."""
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if _SOUNDFILE_FORMATS.get(ext) in sf.available_formats():
            info = sf.info(str(path))
            rate, frames, channels = info.samplerate, info.frames, info.channels
        elif ext in _FFMPEG_EXTS:
            with audioread.audio_open(str(path)) as f:
                rate, channels = f.samplerate, f.channels
                frames = int(f.duration * rate)
        else:
            return None
    except Exception:
        return None
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioLimitError(f"{path}: sample rate {rate} Hz is outside the "
                              f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz accepted; resample the file",
                              "rate")
    seconds = frames / rate
    if seconds > max_seconds:
        raise AudioLimitError(f"{path}: {seconds:.0f} s of audio is longer than the "
                              f"{max_seconds:g} s allowed; send a shorter excerpt", "length")
    if frames * channels > _MAX_DECODED:
        raise AudioLimitError(f"{path}: {channels} channels x {frames} frames is more than the "
                              f"{_MAX_DECODED} samples allowed; send fewer channels or a "
                              "shorter excerpt", "length")
    return frames * channels


def load_audio(path: str | os.PathLike, sr: int = _SR) -> np.ndarray:
    """Mono float32 signal at sample rate sr (like librosa.load: soxr_hq resampling). Raises AudioError."""
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
        n = int(np.ceil(y.size * (float(sr) / native)))  # as librosa.resample(y, orig_sr=native, target_sr=sr)
        y = _fix_length(soxr.resample(y, native, sr, quality="soxr_hq"), n)
    return y.astype(np.float32, copy=False)


def _check(y: np.ndarray) -> None:
    if y.size < _N_FFT:
        raise AudioError(f"too short ({y.size} samples, need {_N_FFT})")
    if not np.isfinite(y).all():
        raise AudioError("signal has NaN or inf samples")
    if np.abs(y).max() < _SILENCE_PEAK:
        raise AudioError("silent (all samples near zero)")


# ---- librosa 0.11's operations, in numpy -------------------------------------------------------
# Each helper names the librosa function it reproduces; dtypes and memory order follow librosa's,
# so that sums run in the same order and give the same float32 values.

def _hann(n: int) -> np.ndarray:
    """scipy.signal.get_window("hann", n, fftbins=True), float64."""
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w[:-1]


def _frame(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """librosa.util.frame along the last axis: a view [..., length, n_frames]."""
    view = np.lib.stride_tricks.as_strided(x, shape=(*x.shape[:-1], x.shape[-1] - length + 1, length),
                                           strides=(*x.strides, x.strides[-1]), writeable=False)
    return np.moveaxis(view, -1, -2)[..., ::hop]


def _fix_length(x: np.ndarray, n: int) -> np.ndarray:
    """librosa.util.fix_length: cut or zero-pad the last axis to n."""
    return x[..., :n] if x.shape[-1] >= n else np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def _normalize(S: np.ndarray, norm: float, axis: int) -> np.ndarray:
    """librosa.util.normalize (fill=None): divide by the norm along axis, except tiny norms."""
    mag = np.abs(S).astype(float)
    length = (np.max(mag, axis=axis, keepdims=True) if norm == np.inf
              else np.sum(mag**norm, axis=axis, keepdims=True) ** (1.0 / norm))
    length[length < np.finfo(S.dtype).tiny] = 1.0
    out = np.empty_like(S)
    out[:] = S / length
    return out


def _stft(y: np.ndarray) -> np.ndarray:
    """librosa.stft(y, n_fft=2048, hop_length=512, pad_mode="reflect"): complex64, Fortran order."""
    frames = _frame(np.pad(y, _N_FFT // 2, mode="reflect"), _N_FFT, _HOP)
    D = np.zeros((1 + _N_FFT // 2, frames.shape[-1]), dtype=np.complex64, order="F")
    D[:] = scipy.fft.rfft(_hann(_N_FFT)[:, None] * frames, axis=-2)
    return D


def _overlap_add(frames: np.ndarray) -> np.ndarray:
    """librosa's overlap-add of [2048, n_frames] frames at hop 512 into float32: each sample adds
    its four frames in frame order (float32 += float64), the order librosa's frame loop adds them."""
    n_frames = frames.shape[-1]
    parts = frames.reshape(_N_FFT // _HOP, _HOP, n_frames)  # [quarter, sample, frame]
    blocks = np.zeros((n_frames + _N_FFT // _HOP - 1, _HOP), dtype=np.float32)
    for q in reversed(range(_N_FFT // _HOP)):  # block b gets frame b-3 (its last quarter) first
        blocks[q:q + n_frames] += parts[q].T
    return blocks.reshape(-1)


@functools.lru_cache(maxsize=8)
def _window_sumsquare(n_frames: int) -> np.ndarray:
    """librosa.filters.window_sumsquare("hann", n_frames, hop_length=512, n_fft=2048), float32."""
    return _overlap_add(np.repeat(_hann(_N_FFT)[:, None] ** 2, n_frames, axis=1))


def _istft(X: np.ndarray, n: int) -> np.ndarray:
    """fix_length(librosa.istft(X, hop_length=512, dtype=float32), size=n)."""
    y = _overlap_add(_hann(_N_FFT)[:, None] * scipy.fft.irfft(X, n=_N_FFT, axis=-2))
    window_ss = _window_sumsquare(X.shape[-1])
    y, window_ss = y[_N_FFT // 2:-(_N_FFT // 2)], window_ss[_N_FFT // 2:-(_N_FFT // 2)]
    nonzero = window_ss > np.finfo(np.float32).tiny
    y[nonzero] /= window_ss[nonzero]
    return _fix_length(y, n)


def _median_filter(S: np.ndarray, axis: int, width: int = 31) -> np.ndarray:
    """scipy.ndimage.median_filter(S, size=width along axis, mode="reflect"), one 1-D line at a
    time: scipy's 1-D median filter is several times faster than its n-D one, same values."""
    lines = np.ascontiguousarray(np.moveaxis(S, axis, -1))
    out = np.empty_like(lines)
    for i in range(lines.shape[0]):
        scipy.ndimage.median_filter(lines[i], size=width, mode="reflect", output=out[i])
    return np.moveaxis(out, -1, axis)


def _softmask(X: np.ndarray, X_ref: np.ndarray) -> np.ndarray:
    """librosa.util.softmask(X, X_ref, power=2, split_zeros=True)."""
    Z = np.maximum(X, X_ref).astype(X.dtype)
    bad = Z < np.finfo(X.dtype).tiny
    Z[bad] = 1
    mask, ref = (X / Z) ** 2.0, (X_ref / Z) ** 2.0
    good = ~bad
    mask[good] /= mask[good] + ref[good]
    mask[bad] = 0.5
    return mask


def _hpss(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """librosa.decompose.hpss(D): the harmonic and percussive STFTs (kernel 31, margin 1, power 2)."""
    S = np.abs(D)  # magphase
    zeros = S == 0
    S_nonzero = S + zeros
    phase = np.empty_like(D)
    phase.real = D.real / S_nonzero + zeros
    phase.imag = D.imag / S_nonzero
    harm = np.empty_like(S)
    harm[:] = _median_filter(S, axis=-1)
    perc = np.empty_like(S)
    perc[:] = _median_filter(S, axis=-2)
    return (S * _softmask(harm, perc)) * phase, (S * _softmask(perc, harm)) * phase


_MEL_STEP, _MEL_LOG_HZ = 200.0 / 3, 1000.0  # Slaney mel scale: linear below 1 kHz, log above
_MEL_LOG_START, _MEL_LOG_STEP = (_MEL_LOG_HZ - 0.0) / _MEL_STEP, np.log(6.4) / 27.0


def _hz_to_mel(f: float) -> float:
    """librosa.hz_to_mel (Slaney), a scalar."""
    return _MEL_LOG_START + np.log(f / _MEL_LOG_HZ) / _MEL_LOG_STEP if f >= _MEL_LOG_HZ else (f - 0.0) / _MEL_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """librosa.mel_to_hz (Slaney), an array."""
    freqs = 0.0 + _MEL_STEP * mels
    log = mels >= _MEL_LOG_START
    freqs[log] = _MEL_LOG_HZ * np.exp(_MEL_LOG_STEP * (mels[log] - _MEL_LOG_START))
    return freqs


def _mel_basis(sr: int, n_mels: int = 128) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=2048): Slaney mel scale and area normalisation, float32."""
    weights = np.zeros((n_mels, 1 + _N_FFT // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=_N_FFT, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(float(sr) / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def _chroma_basis(sr: int, tuning: float, n_chroma: int = 12) -> np.ndarray:
    """librosa.filters.chroma(sr=sr, n_fft=2048, tuning=tuning): float32."""
    frequencies = np.linspace(0, sr, _N_FFT, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(frequencies / (440.0 * 2.0 ** (tuning / n_chroma) / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    D = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    D = np.remainder(D + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * D / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    wts = _normalize(wts, 2, axis=0)
    wts *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2) ** 2)), (n_chroma, 1))
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, :1 + _N_FFT // 2], dtype=np.float32)


def _estimate_tuning(P: np.ndarray, sr: int) -> float:
    """librosa.estimate_tuning(S=P, sr=sr, bins_per_octave=12): piptrack's peaks (150-4000 Hz,
    above a tenth of the frame's maximum), their median-or-louder ones' deviation from the
    equal-tempered scale, the commonest in 0.01-semitone bins."""
    S = np.abs(P)
    avg = np.gradient(S, axis=-2)
    # _parabolic_interpolation: numba computes a and b in float64 (float32 sums, int literals)
    x0, below, above = S[1:-1], S[:-2], S[2:]
    a = (above + below).astype(np.float64) - 2 * x0.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a)
    shift = np.zeros_like(S)
    shift[1:-1] = inner
    dskew = 0.5 * avg * shift
    fft_freqs = np.fft.rfftfreq(n=_N_FFT, d=1.0 / sr)
    freq_mask = ((150.0 <= fft_freqs) & (fft_freqs < min(4000.0, sr / 2)))[:, None]
    ref = np.expand_dims(0.1 * np.max(S, axis=-2), -2)
    X = S * (S > ref)
    peak = np.zeros(X.shape, dtype=bool)  # util.localmax along frequency; the first bin never
    peak[1:-1] = (X[1:-1] > X[:-2]) & (X[1:-1] >= X[2:])
    peak[-1] = X[-1] > X[-2]
    idx = np.nonzero(freq_mask & peak)
    pitch, mag = np.zeros_like(S), np.zeros_like(S)
    pitch[idx] = (idx[-2] + shift[idx]) * float(sr) / _N_FFT
    mag[idx] = S[idx] + dskew[idx]
    has_pitch = pitch > 0
    threshold = np.median(mag[has_pitch]) if has_pitch.any() else 0.0
    freqs = pitch[(mag >= threshold) & has_pitch]  # pitch_tuning, resolution 0.01
    freqs = freqs[freqs > 0]
    if not freqs.size:
        return 0.0
    residual = np.mod(12 * np.log2(freqs / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    counts, edges = np.histogram(residual, np.linspace(-0.5, 0.5, 101))
    return float(edges[np.argmax(counts)])


def _power_to_db(S: np.ndarray) -> np.ndarray:
    """librosa.power_to_db(S): ref 1, amin 1e-10, top_db 80."""
    log_spec = 10.0 * np.log10(np.maximum(1e-10, S))
    log_spec -= 10.0 * np.log10(np.maximum(1e-10, 1.0))
    return np.maximum(log_spec, log_spec.max() - 80.0)


def _tempo(mel_db: np.ndarray, sr: int) -> float:
    """librosa.beat.beat_track's tempo from the mel spectrogram in dB: onset_strength (lag 1,
    median over bands) -> tempogram (8 s Hann-windowed autocorrelation) -> librosa.feature.tempo
    (log-normal prior around 120 BPM, at most 320 BPM)."""
    onset = np.maximum(0.0, mel_db[..., 1:] - mel_db[..., :-1])
    onset = np.median(onset, axis=-2)
    onset = np.pad(onset, (1 + _N_FFT // (2 * _HOP), 0), mode="constant")[:mel_db.shape[-1]]
    win = int(8.0 * sr) // _HOP  # time_to_frames(8.0)
    n = onset.shape[-1]
    padded = np.pad(onset, (win // 2, win // 2), mode="linear_ramp", end_values=[0, 0])
    odf = _frame(padded, win, 1)[..., :n] * _hann(win)[:, None]
    n_pad = scipy.fft.next_fast_len(2 * win - 1, real=True)  # autocorrelate along the window
    spec = scipy.fft.rfft(odf, n=n_pad, axis=-2)
    tg = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=n_pad, axis=-2)[:win]
    tg = _normalize(tg, np.inf, axis=-2).mean(axis=-1, keepdims=True)
    bpms = np.zeros(win)
    bpms[0] = np.inf
    bpms[1:] = 60.0 * sr / (_HOP * np.arange(1.0, win))
    logprior = -0.5 * ((np.log2(bpms) - np.log2(120.0)) / 1.0) ** 2
    logprior[:int(np.argmax(bpms < 320.0))] = -np.inf
    return float(bpms[np.argmax(np.log1p(1e6 * tg) + logprior[:, None], axis=-2)][0])


def _zero_crossing_rate(y: np.ndarray) -> np.ndarray:
    """librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512): per frame, the
    share of its samples whose sign differs from the previous sample's (|x| <= 1e-10 counts as +0).
    Counted with a cumulative sum over the signal: integers, so exactly librosa's values."""
    yp = np.pad(y, _N_FFT // 2, mode="edge")
    sign = np.signbit(np.where(np.abs(yp) <= np.float64(1e-10), 0, yp))
    total = np.concatenate(([0], np.cumsum(sign[1:] != sign[:-1])))  # total[k]: crossings in yp[:k+1]
    starts = np.arange(0, yp.size - _N_FFT + 1, _HOP)
    return (total[starts + _N_FFT - 1] - total[starts]) / _N_FFT


def _rms(y: np.ndarray) -> np.ndarray:
    """librosa.feature.rms(y=y, frame_length=2048, hop_length=512, pad_mode="reflect")."""
    x = _frame(np.pad(y, _N_FFT // 2, mode="reflect"), _N_FFT, _HOP)
    return np.sqrt(np.mean(np.square(x), axis=-2, keepdims=True))


def extract_features(y: np.ndarray, sr: int = _SR) -> dict[str, float]:
    """The 57 GTZAN features of a mono signal, in CSV column order. Raises AudioError."""
    y = np.asarray(y, dtype=np.float32)
    _check(y)
    D = _stft(y)
    S = np.abs(D)
    P = S**2
    H, Pc = _hpss(D)
    mel_db = _power_to_db(np.einsum("...ft,mf->...mt", P, _mel_basis(sr), optimize=True))
    freq = np.fft.rfftfreq(n=_N_FFT, d=1.0 / sr)[:, None]
    S_share = _normalize(S, 1, axis=-2)
    centroid = np.sum(freq * S_share, axis=-2, keepdims=True)
    deviation = np.abs(np.subtract.outer(centroid[0], freq[:, 0]).swapaxes(-2, -1))
    energy = np.cumsum(S, axis=-2)
    above = np.where(energy < np.expand_dims(0.85 * energy[-1], -2), np.nan, 1)
    chroma = np.einsum("cf,...ft->...ct", _chroma_basis(sr, _estimate_tuning(P, sr)), P, optimize=True)
    series = {
        "chroma_stft": _normalize(chroma, np.inf, axis=-2),
        "rms": _rms(y),
        "spectral_centroid": centroid,
        "spectral_bandwidth": np.sum(S_share * deviation**2, axis=-2, keepdims=True) ** 0.5,
        "rolloff": np.nanmin(above * freq, axis=-2, keepdims=True),
        "zero_crossing_rate": _zero_crossing_rate(y),
        "harmony": _istft(H, y.size),
        "perceptr": _istft(Pc, y.size),
    }
    mfcc = scipy.fft.dct(mel_db, axis=-2, type=2, norm="ortho")[:20]
    out: dict[str, float] = {}
    for k, x in series.items():
        out[f"{k}_mean"], out[f"{k}_var"] = float(np.mean(x)), float(np.var(x))
    out["tempo"] = _tempo(mel_db, sr)
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
            found.update(f for f in p.rglob("*") if f.is_file() and is_audio_file(f))
        elif p.is_file():
            if is_audio_file(p):
                found.add(p)
        else:
            raise AudioError(f"{p}: no such file or folder")
    return sorted(found)
