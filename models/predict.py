"""Load an exported model folder and classify feature rows, feature CSVs or audio files.
Uses only the folder.

Audio longer than two of the model's clips (model.json clip_samples: the training rows' length)
is cut into consecutive clip-long windows whose probabilities are averaged; shorter audio is
classified whole.

Importing this module loads neither torch nor the audio code: the ONNX backend runs without torch
(a new `gsearch predict` process starts about a second sooner), and audio features are imported
when the first audio file comes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from gsearch import GsearchError
from gsearch.data.files import check_readable
from gsearch.data.load import read_features
from gsearch.data.schema import FEATURE_NAMES, FILENAME_COLUMN
from gsearch.data.schema import NUMERIC
from gsearch.models.folder import first_line
from gsearch.models.export import build_exported, check_onnx, check_state, read_checked
from gsearch.models.manifest import MODEL_FILE, ONNX_FILE, ExportManifest

BACKENDS = ("onnx", "torch")
TABLE_SUFFIXES = {".csv", ".tsv", ".txt"}   # what predict reads as a table (plain or .gz)


# Rows through an exported network at once: its quantile transform (models.mlp.Quantile) holds
# rows x inputs x 32 values three times over (1M rows of 136 inputs at once: 11.6 GB)
ROWS_AT_ONCE = 8192


def by_rows(outputs: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> np.ndarray:
    """outputs(X), computed ROWS_AT_ONCE rows at a time: memory bounded whatever the table."""
    if len(X) <= ROWS_AT_ONCE:
        return outputs(X)
    return np.concatenate([outputs(X[i:i + ROWS_AT_ONCE]) for i in range(0, len(X), ROWS_AT_ONCE)])


class ExportedModel:
    """An exported model: `predict_proba(X)` (a classifier) or `predict_values(X)` (a
    regression) on raw rows X [N, n_features] (data.encode: a numeric feature's value or NaN,
    a categorical feature's slot); `matrix(columns)` makes X from values by feature name."""

    def __init__(self, directory: str | Path, backend: str = "torch"):
        """Load and check the folder (models.manifest.ExportManifest.read, then models.export:
        read_checked, check_onnx, check_state); any problem is one GsearchError line, raised
        before a model is built. `manifest`: its model.json; `meta`: that file as written (GET
        /model answers it); `verified`: model.json recorded digests and they matched (False:
        an older export)."""
        directory = Path(directory)
        if backend not in BACKENDS:
            raise GsearchError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.manifest, self.meta, self.verified = ExportManifest.read(directory)
        self.classes, self.features = self.manifest.classes, self.manifest.features
        self.task, self.encoding = self.manifest.task, self.manifest.encoding
        self.kinds = (self.encoding.kinds if self.encoding is not None
                      else (NUMERIC,) * len(self.features))
        self.members = list(self.manifest.configs) if self.manifest.ensemble else []
        self.config = self.manifest.configs[0]
        self.clip_samples = self.manifest.window
        reading = self.manifest.reading if isinstance(self.manifest.reading, dict) else {}
        words = reading.get("missing")   # the words its table's empty cells were (--missing)
        self.missing = words if isinstance(words, str) else None
        self.backend = backend
        if backend == "onnx":
            self._session = _onnx_session(directory / ONNX_FILE, self.manifest)
        else:
            self._model = _torch_module(directory / MODEL_FILE, self.manifest)

    @property
    def regression(self) -> bool:
        return self.manifest.regression

    def matrix(self, columns: dict[str, list], where=lambda i, name: f"row {i + 1}") -> np.ndarray:
        """Raw rows [N, n_features] from values by feature name: a numeric feature's numbers
        (None or NaN: empty), a categorical feature's text (numbers are taken as text; None or
        "", as a CSV's empty cell: empty; a value never seen in training goes to its "other"
        slot). A text value where
        the model reads a number is a GsearchError naming it (`where(row, feature)`)."""
        n = len(next(iter(columns.values()))) if columns else 0
        X = np.empty((n, len(self.features)), np.float32)
        for j, (name, kind) in enumerate(zip(self.features, self.kinds)):
            values = columns[name]
            if kind == NUMERIC and isinstance(values, np.ndarray) and values.dtype.kind == "f":
                X[:, j] = values   # a CSV column, read and checked as numbers
            elif kind == NUMERIC:
                for i, v in enumerate(values):
                    if isinstance(v, str) or isinstance(v, bool):
                        raise GsearchError(f"{where(i, name)}: {str(v)[:40]!r} is text; the model "
                                           f"reads a number for {name!r}")
                X[:, j] = np.array([np.nan if v is None else v for v in values], np.float64)
            else:
                text = [None if v is None or v == "" or (isinstance(v, float) and np.isnan(v))
                        else (v if isinstance(v, str) else _as_text(v)) for v in values]
                X[:, j] = self.encoding.slots(j, text)
        return X

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """The graph's outputs for raw rows: a classifier's logits, a regression's [N, 1]."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise GsearchError(f"expected rows of {len(self.features)} features, got shape {X.shape}")
        if self.backend == "onnx":
            return by_rows(lambda part: self._session.run(None, {"features": part})[0], X)
        import torch  # lazy: the onnx backend runs without torch (loaded by now)

        with torch.inference_mode():
            return by_rows(lambda part: self._model(torch.from_numpy(part)).numpy(), X)

    def logits(self, X: np.ndarray) -> np.ndarray:
        if self.regression:
            raise GsearchError("this model is a regression: it answers numbers, not classes")
        return self.outputs(X)

    def predict_values(self, X: np.ndarray) -> np.ndarray:
        """A regression's predictions [N], in the target's own units."""
        if not self.regression:
            raise GsearchError("this model is a classifier: it answers classes, not numbers")
        return self.outputs(X)[:, 0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict_sets(self, X: np.ndarray) -> list[tuple[str, ...]]:
        """A classifier's conformal prediction sets at its calibration's level: per row the
        classes whose (calibrated) probability reaches the threshold, most likely first."""
        from gsearch.models.calibration import prediction_sets   # lazy: scipy with it

        calibration = self.calibration()
        return [tuple(self.classes[c] for c in s)
                for s in prediction_sets(self.predict_proba(X), calibration.threshold)]

    def predict_intervals(self, X: np.ndarray) -> np.ndarray:
        """A regression's conformal intervals at its calibration's level: [N, 2] (low, high)."""
        half = self.calibration().threshold
        values = self.predict_values(X)
        return np.stack([values - half, values + half], axis=1)

    def calibration(self):
        """The export's calibration (models.calibration.Calibration); GsearchError without."""
        if self.manifest.calibration is None:
            raise GsearchError("this model was exported without calibration, so it has no "
                               "prediction sets or intervals; export it again with --level")
        return self.manifest.calibration

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class indices of a classifier, or a regression's numbers."""
        return self.predict_values(X) if self.regression else self.logits(X).argmax(axis=1)


@dataclass(frozen=True)
class Prediction:
    """One classified (or, by a regression, predicted) file (audio) or row (feature CSV)."""

    file: str                        # the audio file, or the CSV row's filename column
    probabilities: dict[str, float]  # every class, most likely first ({} for a regression)
    windows: int | None = None       # audio: how many windows were averaged
    source: str | None = None        # CSV rows: the CSV file
    row: int | None = None           # CSV rows: the data row in that file (from 1)
    value: float | None = None       # a regression's prediction
    conformal: tuple | None = None   # with --sets: the class set, or the (low, high) interval

    @property
    def genre(self) -> str:
        """The most likely class."""
        return next(iter(self.probabilities))

    def to_json(self, top_k: int | None = None) -> dict:
        extra = ({"windows": self.windows} if self.windows else
                 {"source": self.source, **({"row": self.row} if self.row is not None else {})})
        if self.conformal is not None:
            extra["interval" if self.value is not None else "set"] = list(self.conformal)
        if self.value is not None:
            return {"file": self.file, "value": self.value, **extra}
        return {"file": self.file, "genre": self.genre,
                "probabilities": dict(list(self.probabilities.items())[:top_k]), **extra}

    def format(self, top_k: int = 1) -> str:
        if self.value is not None:
            shown = f"{self.file}: {self.value:.6g}"
            return shown + (f" [{self.conformal[0]:.6g}, {self.conformal[1]:.6g}]" if self.conformal else "")
        best = ", ".join(f"{g} {p:.3f}" for g, p in list(self.probabilities.items())[:top_k])
        sets = f" {{{', '.join(self.conformal)}}}" if self.conformal is not None else ""
        return (f"{self.file}: {best}{sets}"
                + (f" ({self.windows} windows)" if (self.windows or 0) > 1 else ""))


def _onnx_session(path: Path, manifest: ExportManifest):
    """An onnxruntime session of a checked model.onnx."""
    import onnxruntime  # lazy: only the onnx backend loads onnxruntime

    data = read_checked(path, manifest, ", or use the torch backend")
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise GsearchError(f"cannot load {path} ({first_line(e)}); "
                           "export the model again, or use the torch backend") from None
    check_onnx(session, data, path, manifest)
    return session


def _torch_module(path: Path, manifest: ExportManifest):
    """The torch module of a checked model.pt, loaded without unpickling arbitrary objects."""
    import torch  # lazy: predict --backend onnx starts without torch

    data = read_checked(path, manifest)
    try:  # weights_only: tensors and containers only, never arbitrary objects
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise GsearchError(f"cannot load {path} ({first_line(e)}); "
                           "export the model again") from None
    check_state(state, path, manifest)
    model = build_exported(manifest)
    model.load_state_dict(state)
    return model.eval()


def _as_text(value) -> str:
    """A number as the text a CSV cell holds: 3 for 3.0, so that numbers sent for a
    categorical feature find the categories read from a file."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _prediction(model: ExportedModel, name: str, p: np.ndarray, **where) -> Prediction:
    order = np.argsort(-p, kind="stable")
    return Prediction(name, {model.classes[i]: float(p[i]) for i in order}, **where)


def predict_csv(model: ExportedModel, path: Path, *, sets: bool = False, sep: str | None = None,
                on_error: Callable[[GsearchError], None] | None = None,
                max_mb: float | None = None, missing: str | None = None) -> list[Prediction]:
    """One prediction per row of a feature CSV (label column optional), its columns read by
    the model's feature names and kinds; `sets`: with its conformal set or interval. A row that
    cannot be read goes to `on_error` (one GsearchError each) and the others are predicted;
    without `on_error` it stops the file. Each prediction is named by the row's filename
    column, or by the file and row."""
    bad: dict[int, str] = {}
    frame = read_features(path, require_labels=False, features=model.features, kinds=model.kinds,
                          sep=sep, bad_rows=None if on_error is None else bad, max_mb=max_mb,
                          missing=model.missing if missing is None else missing)
    for i in sorted(bad):
        on_error(GsearchError(bad[i]))
    keep = np.setdiff1d(np.arange(len(frame)), list(bad))
    frame = frame.iloc[keep]
    X = model.matrix({name: frame[name].to_numpy() if kind == NUMERIC else list(frame[name])
                      for name, kind in zip(model.features, model.kinds)})
    generated = all(str(n) == f"row{i}" for i, n in zip(keep, frame[FILENAME_COLUMN]))
    names = ([f"{path.name} row {i + 1}" for i in keep] if generated else
             [str(name) for name in frame[FILENAME_COLUMN]])
    where = {"source": str(path)}
    if model.regression:
        intervals = model.predict_intervals(X) if sets else [None] * len(names)
        return [Prediction(name, {}, **where, row=int(r) + 1, value=float(v),
                           conformal=None if i is None else (float(i[0]), float(i[1])))
                for name, r, v, i in zip(names, keep, model.predict_values(X), intervals)]
    conformal = model.predict_sets(X) if sets else [None] * len(names)
    return [_prediction(model, name, p, **where, row=int(r) + 1, conformal=c)
            for name, r, p, c in zip(names, keep, model.predict_proba(X), conformal)]


def audio_windows(model: ExportedModel, path: Path) -> list[tuple[str, int, dict[str, float]]]:
    """The feature rows predict_audio averages: consecutive windows of model.clip_samples
    (silent ones skipped) when the audio holds at least two, else the whole file."""
    from gsearch.data.audio import extract_signal, load_audio  # lazy: a CSV never loads scipy

    y = load_audio(path)
    step = model.clip_samples + 1  # as in data.audio: a window is one sample shorter than its step
    return extract_signal(y, path, step if y.size >= 2 * step else None)


def predict_audio(model: ExportedModel, path: Path, *, sets: bool = False) -> Prediction:
    missing = [f for f in model.features if f not in FEATURE_NAMES]
    if missing:
        raise GsearchError(f"{path}: this model was trained on features that audio extraction does "
                           f"not compute (first: {missing[0]!r}; audio gives the 57 Kaggle GTZAN "
                           "features); classify a feature CSV with the model's columns instead")
    rows = audio_windows(model, path)
    X = np.array([[feats[k] for k in model.features] for _, _, feats in rows], np.float32)
    p = model.predict_proba(X).mean(axis=0)
    conformal = None
    if sets:
        from gsearch.models.calibration import prediction_sets   # lazy: scipy with it

        conformal = tuple(model.classes[c] for c in prediction_sets(p[None], model.calibration().threshold)[0])
    return _prediction(model, str(path), p, windows=len(rows), conformal=conformal)


def predict_file(model: ExportedModel, path: str | Path, *, sets: bool = False, sep: str | None = None,
                 on_error: Callable[[GsearchError], None] | None = None,
                 max_mb: float | None = None, missing: str | None = None) -> list[Prediction]:
    """A .csv file: one prediction per row; else one prediction for the audio file; `sets`:
    each with its conformal set or interval."""
    path = Path(path)
    if not path.exists():
        raise GsearchError(f"{path}: no such file")
    check_readable(path)   # a FIFO, a device (/dev/zero): refused in one line
    if TABLE_SUFFIXES & {suffix.lower() for suffix in path.suffixes}:   # x.csv, x.tsv.gz, ...
        return predict_csv(model, path, sets=sets, sep=sep, on_error=on_error, max_mb=max_mb,
                           missing=missing)
    from gsearch.data.audio import SUPPORTED_EXTENSIONS, is_audio_file  # lazy: as in audio_windows

    if not is_audio_file(path):
        raise GsearchError(f"{path}: not a file predict reads ({path.suffix or 'no extension'}); give "
                           f"a feature table (.csv, .tsv, .txt) or audio ({SUPPORTED_EXTENSIONS})")
    return [predict_audio(model, path, sets=sets)]


def predict_files(model: ExportedModel, paths, on_error: Callable[[GsearchError], None], *,
                  sets: bool = False, sep: str | None = None,
                  max_mb: float | None = None, missing: str | None = None) -> Iterator[Prediction]:
    """Predictions for every path (a folder: each audio file in it, recursively); a file that
    fails goes to on_error and the others go on."""
    for path in map(Path, paths):
        files = [path]
        if path.is_dir():
            from gsearch.data.audio import iter_audio_files  # lazy: as in audio_windows

            files = iter_audio_files([path])
            if not files:
                on_error(GsearchError(f"{path}: no audio files in this folder"))
        for f in files:
            try:
                preds = predict_file(model, f, sets=sets, sep=sep, on_error=on_error, max_mb=max_mb,
                                     missing=missing)
            except GsearchError as e:
                on_error(e)
                continue
            yield from preds


def predictions_table(model: ExportedModel, predictions: list[Prediction]):
    """Predictions as a table (predict --out FILE.csv): file, source, row, the prediction (the
    class, or a regression's value), each class's probability, and the conformal set (classes
    joined by '|') or interval (low, high) where they were asked for."""
    import pandas as pd   # lazy: as read_features', only for --out

    rows = []
    for p in predictions:
        row = {"file": p.file, "source": p.source or "", "row": p.row}
        if p.value is not None:
            row["prediction"] = p.value
            if p.conformal is not None:
                row["low"], row["high"] = p.conformal
        else:
            row["prediction"] = p.genre
            row.update({f"probability_{c}": p.probabilities.get(c) for c in model.classes})
            if p.conformal is not None:
                row["set"] = "|".join(p.conformal)
        if p.windows:
            row["windows"] = p.windows
        rows.append(row)
    return pd.DataFrame(rows)
