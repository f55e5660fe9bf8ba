"""POST /predict/audio's uploads: the file is staged to a temporary file, its header checked
before anything is decoded (a 413 or 422 at once), then its clip-long windows
(models.predict.audio_windows) become a FeatureBatch through requests.feature_batch, as every
request does. Messages name the upload, never the temporary path."""

from __future__ import annotations

import errno
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from gsearch import GsearchError
from gsearch.data.audio import AudioLimitError, check_audio_header
from gsearch.data.schema import FEATURE_NAMES, SAMPLE_RATE
from gsearch.models.predict import ExportedModel, audio_windows
from gsearch.serve.errors import RequestError, out_of_space
from gsearch.serve.requests import FeatureBatch, feature_batch

_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")


def upload_name(filename: str | None) -> str:
    """The client's file name as echoed back: its last path part, control characters shown as
    '?', at most 200 characters; "upload" when nothing is left (no name, or "/")."""
    name = Path(filename or "").name
    name = "".join(c if c.isprintable() else "?" for c in name)[:200]
    return name or "upload"


def audio_refusal(features: tuple[str, ...]) -> str | None:
    """Why a model with these features cannot classify audio, or None: audio extraction computes
    the Kaggle GTZAN features only."""
    missing = [f for f in features if f not in FEATURE_NAMES]
    if not missing:
        return None
    return (f"this model was trained on features that audio extraction does not compute (first: "
            f"{missing[0]!r}; audio gives the {len(FEATURE_NAMES)} Kaggle GTZAN features); send "
            "the file's features to POST /predict instead")


def stage_upload(upload, name: str, max_seconds: float) -> tuple[Path, int | None]:
    """Copy an upload to a temporary file and check its header (duration, sample rate, samples:
    a 413 or 422 before any decoding, the file removed). Returns the file, which the caller
    removes once it is classified, and its samples to decode (None: the header is unreadable).
    Runs in a worker thread."""
    suffix = Path(name).suffix
    suffix = suffix.lower() if _SAFE_SUFFIX.fullmatch(suffix) else ""
    upload.seek(0)
    try:
        with tempfile.NamedTemporaryFile(prefix="gsearch-upload-", suffix=suffix,
                                         delete=False) as tmp:
            try:
                shutil.copyfileobj(upload, tmp, 1 << 20)
            except BaseException:
                Path(tmp.name).unlink(missing_ok=True)
                raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise out_of_space() from None
        raise
    path = Path(tmp.name)
    try:
        return path, check_audio_header(path, max_seconds=max_seconds)
    except AudioLimitError as e:
        path.unlink(missing_ok=True)
        message = str(e).replace(str(path), name)
        if e.kind == "length":
            raise RequestError(f"{message} (--max-audio-seconds)", "too_large") from None
        raise RequestError(message) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def audio_batch(model: ExportedModel, path: Path, name: str) -> FeatureBatch:
    """The staged upload's windows as a FeatureBatch (decoded and extracted here: in a worker
    thread); errors name the upload."""
    try:
        windows = audio_windows(model, path)
    except GsearchError as e:
        raise GsearchError(str(e).replace(str(path), name)) from None
    return feature_batch([features for _, _, features in windows], model.features,
                         f"{name}: window {{}}")


def write_tone(path: Path, seconds: float = 3.0) -> Path:
    """A WAV of a 440 Hz tone with a little noise (classified as music, not refused as silent)."""
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    soundfile.write(path, y.astype(np.float32), SAMPLE_RATE)
    return path
