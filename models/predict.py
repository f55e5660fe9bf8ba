"""Load an exported model folder and classify feature rows. Uses only the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gsearch import GsearchError
from gsearch.models.config import TrialConfig
from gsearch.models.export import ENSEMBLE_FORMAT, FORMAT, META_FILE, MODEL_FILE, ONNX_FILE
from gsearch.models.mlp import build_ensemble, build_mlp


class ExportedModel:
    """An exported classifier: `predict_proba(X)` on raw feature rows [N, n_features]."""

    def __init__(self, directory: str | Path, backend: str = "torch"):
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise GsearchError(f"{directory} is not a gsearch export (no {META_FILE}); "
                               "pass the --out folder of 'gsearch export-best'")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.classes = tuple(self.meta["classes"])
            self.features = tuple(self.meta["features"])
            self.config = TrialConfig.from_dict(self.meta["hyperparameters"])
            fmt = self.meta.get("format", FORMAT)
            self.members = ([TrialConfig.from_dict(m) for m in self.meta["members"]]
                            if fmt == ENSEMBLE_FORMAT else [])
        except (ValueError, KeyError, TypeError) as e:
            raise GsearchError(f"{meta_path} is damaged ({e}); export the model again") from None
        if fmt not in (FORMAT, ENSEMBLE_FORMAT):
            raise GsearchError(f"{meta_path} has format {fmt!r}, which this gsearch cannot read; "
                               "upgrade gsearch or export the model again")
        self.backend = backend
        if backend == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(
                str(directory / ONNX_FILE), providers=["CPUExecutionProvider"])
        elif backend == "torch":
            try:  # weights_only: tensors and containers only, never arbitrary objects
                state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
            except Exception as e:
                raise GsearchError(f"cannot load {directory / MODEL_FILE} ({str(e).splitlines()[0]}); "
                                   "export the model again") from None
            n_features, n_classes = len(self.features), len(self.classes)
            self._model = (build_ensemble(self.members, n_features, n_classes) if self.members
                           else build_mlp(self.config, n_features, n_classes))
            self._model.load_state_dict(state)
            self._model.eval()
        else:
            raise GsearchError(f"unknown backend {backend!r}; use torch or onnx")

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise GsearchError(f"expected rows of {len(self.features)} features, got shape {X.shape}")
        if self.backend == "onnx":
            return self._session.run(None, {"features": X})[0]
        with torch.inference_mode():
            return self._model(torch.from_numpy(X)).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(axis=1)
