"""Write a trained model as a self-contained folder.

- model.onnx: float32 [N, 57] raw features -> logits [N, n_classes]
- model.pt:   a plain state_dict (tensors only; loads with weights_only=True)
- model.json: classes, features, config and metadata (everything needed to rebuild), with
  the model's trainable parameters (n_params) and its latency (latency_ms: median
  milliseconds for onnxruntime to classify one row, see onnx_latency_ms)

An ensemble (format gsearch-mlp-ensemble/2) is one mlp.Ensemble module: one
model.pt, one ONNX graph whose "logits" output is the log of the members' mean
probability (softmax of it is that mean), and model.json describes every member under
"members" (trial, validation and test accuracy, hyperparameters), best first.
- report.json, confusion_matrix.png: held-out evaluation
"""

from __future__ import annotations

import json
import platform
import warnings
from importlib import metadata
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from gsearch.models.config import TrialConfig
from gsearch.models.metrics import median_ms

if TYPE_CHECKING:   # torch is imported where a model is written: predict reads the names below
    from torch import nn

MODEL_FILE, ONNX_FILE, META_FILE = "model.pt", "model.onnx", "model.json"
FORMAT, ENSEMBLE_FORMAT = "gsearch-mlp/1", "gsearch-mlp-ensemble/2"
OLD_ENSEMBLE_FORMAT = "gsearch-mlp-ensemble/1"  # members were a list of hyperparameter dicts
REPORT_FILE, CONFUSION_FILE = "report.json", "confusion_matrix.png"
# onnx_latency_ms: untimed calls, then timed ones (the median is kept)
LATENCY_WARMUP, LATENCY_REPEATS = 20, 200


def package_versions() -> dict[str, str]:
    names = ["gsearch", "torch", "optuna", "numpy", "scikit-learn", "onnx", "onnxruntime"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def plot_confusion(report: dict, path: Path, title: str) -> None:
    """The labelled confusion matrix of metrics.classification_scores as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=120)
    matrix = report["confusion_matrix"]
    display = ConfusionMatrixDisplay(np.array(matrix["rows"]), display_labels=matrix["labels"])
    display.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def export_onnx(model: nn.Module, n_features: int, path: Path) -> None:
    import torch

    model = model.cpu().eval()
    example = torch.zeros(2, n_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["features"],
                          output_names=["logits"], dynamo=False, opset_version=17,
                          dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}})


def onnx_latency_ms(path: Path, n_features: int, *, threads: int | None = None) -> float | None:
    """Median milliseconds for onnxruntime to classify one row with the ONNX graph at `path`
    on the CPU (`threads` intra-op threads, default torch's setting), after warm-up calls.
    None when onnxruntime is not installed."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    row = {"features": np.zeros((1, n_features), np.float32)}
    return median_ms(lambda: session.run(None, row), warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)


def save_model(model: nn.Module, configs: TrialConfig | list[TrialConfig], classes: tuple[str, ...],
               features: tuple[str, ...], out_dir: Path, meta: dict) -> dict:
    """Write model.pt, model.onnx and model.json; return the metadata written. `configs`: the
    model's config, or its members' configs when `model` is an mlp.Ensemble (then meta's
    "members" describes each member, hyperparameters included)."""
    import torch

    from gsearch.models.mlp import count_parameters

    configs = [configs] if isinstance(configs, TrialConfig) else list(configs)
    ensemble = len(configs) > 1
    if ensemble and len(meta.get("members", ())) != len(configs):
        raise ValueError("an ensemble's meta must describe each member under 'members'")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    torch.save(model.state_dict(), out_dir / MODEL_FILE)
    export_onnx(model, len(features), out_dir / ONNX_FILE)
    latency = onnx_latency_ms(out_dir / ONNX_FILE, len(features))
    info = {
        "format": ENSEMBLE_FORMAT if ensemble else FORMAT,
        "classes": list(classes),
        "features": list(features),
        **({} if ensemble else {"hyperparameters": configs[0].to_dict()}),
        **meta,
        "n_params": count_parameters(model),
        "latency_ms": latency,
        "versions": package_versions(),
    }
    (out_dir / META_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info
