"""Write a trained model as a self-contained folder.

- model.onnx: float32 [N, 57] raw features -> logits [N, n_classes]
- model.pt:   a plain state_dict (tensors only; loads with weights_only=True)
- model.json: the manifest (models.manifest.ExportManifest): classes, features, config and
  metadata (everything needed to rebuild), with the model's trainable parameters (n_params)
  and its latency (latency_ms: median milliseconds for onnxruntime to classify one row, see
  onnx_latency_ms), the shapes (n_features, n_classes), the SHA-256 of model.onnx and model.pt
  (sha256) and of model.json's own fields that decide predictions (meta_sha256)

Reading: ExportManifest.read (model.json, its structure and digest), read_checked (a model file
against its recorded digest), check_onnx and check_state (the graph's or the state_dict's
shapes against model.json, every weight finite) raise GsearchError in one line;
predict.ExportedModel calls them before it builds anything. Integrity against accidents and naive tampering, not
a signature: whoever can write the folder can recompute every digest.

An ensemble (format gsearch-mlp-ensemble/2) is one mlp.Ensemble module: one
model.pt, one ONNX graph whose "logits" output is the log of the members' mean
probability (softmax of it is that mean), and model.json describes every member under
"members" (trial, validation and test accuracy, hyperparameters), best first.
- report.json, confusion_matrix.png: held-out evaluation
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import platform
import re
import warnings
from importlib import metadata
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from gsearch import GsearchError
from gsearch.models.folder import first_line
from gsearch.models.manifest import AGAIN, META_FILE, MODEL_FILE, ONNX_FILE, ExportManifest
from gsearch.models.metrics import median_ms

if TYPE_CHECKING:   # torch is imported where a model is written: predict reads the names below
    from torch import nn

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


# Past this many classes the test plot is not the confusion matrix (its cells and their
# labels grow with the square of the classes: 300 classes took 91 s and 1.1 GB) but the recall
# of the classes the model gets most wrong, as bars
CONFUSION_MAX_CLASSES = 30
WORST_CLASSES = 30


def plot_confusion(report: dict, path: Path, title: str) -> None:
    """The labelled confusion matrix of metrics.classification_scores as a PNG; past
    CONFUSION_MAX_CLASSES classes, the per-class recall of the WORST_CLASSES lowest."""
    matrix = report["confusion_matrix"]
    if len(matrix["labels"]) > CONFUSION_MAX_CLASSES:
        _plot_worst_recalls(matrix, path, title)
        return
    from sklearn.metrics import ConfusionMatrixDisplay   # lazy: only an export draws

    with _text_only():
        fig, ax = _figure((7.5, 6.5))
        display = ConfusionMatrixDisplay(np.array(matrix["rows"]), display_labels=matrix["labels"])
        display.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)


def _plot_worst_recalls(matrix: dict, path: Path, title: str) -> None:
    """Horizontal bars: the recall on the test rows of the WORST_CLASSES classes with the
    lowest (those with the most test rows first among equals), in one figure of fixed size."""
    from gsearch.models.metrics import class_recalls

    labels = matrix["labels"]
    support, correct = class_recalls(matrix)
    tested = np.flatnonzero(support > 0)
    recall = correct[tested] / support[tested]
    order = tested[np.lexsort((-support[tested], recall))][:WORST_CLASSES]
    with _text_only():
        fig, ax = _figure((7.5, 2.0 + 0.22 * len(order)))
        ax.barh(np.arange(len(order)), correct[order] / support[order], color="#4a7ab5")
        ax.set_yticks(np.arange(len(order)),
                      [f"{labels[c][:40]} ({correct[c]}/{support[c]})" for c in order], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("recall on the test rows (right / test rows of the class)")
        ax.set_title(f"{title}\n{len(labels)} classes: the {len(order)} with the lowest recall "
                     "(all of them in report.json)", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)


def _text_only():
    """Every text drawn as it is: a `$` in a class label is a dollar sign, not maths."""
    from matplotlib import rc_context   # lazy: only an export draws

    return rc_context({"text.parse_math": False, "text.usetex": False})


def _figure(size: tuple[float, float]):
    """A figure and its axes drawn off screen, without pyplot: an export in a notebook (the
    Python API) leaves the notebook's own plotting backend as it was."""
    from matplotlib.figure import Figure   # lazy: only an export draws (matplotlib: 0.7 s)

    fig = Figure(figsize=size, dpi=120)
    return fig, fig.subplots()


def output_name(manifest: ExportManifest) -> str:
    """The graph's output: a classifier's `logits`, a regression's `prediction`."""
    return "prediction" if manifest.regression else "logits"


def build_exported(manifest: ExportManifest) -> nn.Module:
    """An untrained module of the shape the manifest describes (what load_state_dict fills in):
    the network (an MLP, or an Ensemble of its members), behind models.mlp.Preprocess when
    the rows are encoded."""
    from gsearch.models.mlp import Pipeline, Preprocess, build_ensemble, build_mlp   # lazy: torch

    configs, n_in, n_out = list(manifest.configs), manifest.n_inputs, manifest.n_outputs
    target = (0.0, 1.0) if manifest.regression else None
    network = (build_ensemble(configs, n_in, n_out, regression=manifest.regression)
               if manifest.ensemble else build_mlp(configs[0], n_in, n_out, target=target))
    if manifest.encoding is None or manifest.encoding.is_identity:
        return network
    return Pipeline(Preprocess(manifest.encoding), network)


def plot_test(task: str, report: dict, path: Path, title: str) -> None:
    """The test split drawn as a PNG: a classifier's confusion matrix, a regression's
    predictions against the actual values."""
    if task != "regression":
        plot_confusion(report, path, f"{title}: test accuracy {report['accuracy']:.1%}")
        return
    actual, predicted = np.array(report["actual"]), np.array(report["predicted"])
    with _text_only():
        fig, ax = _figure((6.5, 6.5))
        ax.scatter(actual, predicted, s=10, alpha=0.6)
        low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="0.4", linewidth=1, label="predicted = actual")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.legend(loc="upper left")
        ax.set_title(f"{title}: test RMSE {report['rmse']:.4g}, R^2 {report['r2']:.3f}", loc="left")
        fig.tight_layout()
        fig.savefig(path)


def export_onnx(model: nn.Module, n_features: int, path: Path | io.BytesIO,
                output: str = "logits") -> None:
    import torch   # lazy: predict reads this module and runs the onnx backend without torch

    model = model.cpu().eval()
    example = torch.zeros(2, n_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path if isinstance(path, io.BytesIO) else str(path),
                          input_names=["features"],
                          output_names=[output], dynamo=False, opset_version=17,
                          dynamic_axes={"features": {0: "batch"}, output: {0: "batch"}})


def onnx_latency_ms(path: Path, n_features: int, *, threads: int | None = None) -> float | None:
    """Median milliseconds for onnxruntime to classify one row with the ONNX graph at `path`
    on the CPU (`threads` intra-op threads, default torch's setting), after warm-up calls.
    None when onnxruntime is not installed."""
    import torch   # lazy: predict reads this module and runs the onnx backend without torch

    try:
        import onnxruntime as ort   # lazy: as torch above; and onnxruntime may be missing (None)
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    row = {"features": np.zeros((1, n_features), np.float32)}
    return median_ms(lambda: session.run(None, row), warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)


def save_model(model: nn.Module, manifest: ExportManifest, out_dir: Path) -> ExportManifest:
    """Write model.pt, model.onnx and model.json for `model` (its config or, for an
    mlp.Ensemble, its members' are the manifest's `configs`); returns the manifest as written:
    with the model's trainable parameters, its ONNX latency, the package versions and the
    SHA-256 of both model files."""
    import torch   # lazy: predict reads this module and runs the onnx backend without torch

    from gsearch.models.mlp import count_parameters   # lazy: mlp imports torch, as above

    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    # both serialized in memory, then written by Python: a failed write (a full disk) is an
    # OSError, which models.folder.replacing says in one line (torch's own writer raises a
    # RuntimeError of its C++ stream)
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    (out_dir / MODEL_FILE).write_bytes(weights.getvalue())
    graph = io.BytesIO()
    export_onnx(model, manifest.n_features, graph, output_name(manifest))
    (out_dir / ONNX_FILE).write_bytes(graph.getvalue())
    written = dataclasses.replace(
        manifest, n_params=count_parameters(model),
        latency_ms=onnx_latency_ms(out_dir / ONNX_FILE, manifest.n_features),
        versions=package_versions(),
        sha256={name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
                for name in (ONNX_FILE, MODEL_FILE)})
    written.write(out_dir)
    return written


# ---- reading and checking an export folder -----------------------------------------------------

def read_checked(path: Path, manifest: ExportManifest, hint: str = "") -> bytes:
    """The bytes of model.onnx or model.pt, checked against model.json's digest where it
    records one. `hint`: what else to try, added to a read error."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GsearchError(f"cannot load {path} ({e.strerror or e}); {AGAIN}{hint}") from None
    if not data:   # an export cut short (a full disk, before exports were written whole)
        raise GsearchError(f"{path} is empty: the export is damaged; {AGAIN}")
    expected = (manifest.sha256 or {}).get(path.name)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise GsearchError(f"{path} does not match the SHA-256 that {META_FILE} records for it "
                           f"(changed or damaged after export); {AGAIN}")
    return data


def check_onnx(session, data: bytes, path: Path, manifest: ExportManifest) -> None:
    """The graph takes `features` [N, n_features] and answers `logits` [N, n_classes] (or a
    regression's `prediction` [N, 1]; model.json's counts), and every weight in it is finite."""
    import onnx  # lazy: only the onnx backend reads the graph's weights
    from onnx import numpy_helper

    output = output_name(manifest)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["features"] or not outputs or outputs[0].name != output:
        raise GsearchError(f"{path} is not a gsearch graph (inputs {[i.name for i in inputs]}, outputs "
                           f"{[o.name for o in outputs]}; expected features -> {output}); {AGAIN}")
    outputs_what = "outputs" if manifest.regression else "classes"
    for arg, count, what, side in ((inputs[0], manifest.n_features, "features", "takes"),
                                   (outputs[0], manifest.n_outputs, outputs_what, "answers")):
        shape = list(arg.shape)
        if len(shape) != 2 or shape[1] != count:
            raise GsearchError(f"{META_FILE} lists {count} {what} but {path} {side} {arg.name} of "
                               f"shape {shape}; {AGAIN}")
    try:
        graph = onnx.load_model_from_string(data).graph
        tensors = [(t.name, t) for t in graph.initializer]
        tensors += [(node.output[0], attr.t) for node in graph.node if node.op_type == "Constant"
                    for attr in node.attribute if attr.name == "value"]
        for name, tensor in tensors:
            values = numpy_helper.to_array(tensor)
            if values.dtype.kind in "fc" and not np.isfinite(values).all():
                raise GsearchError(f"{path} holds NaN or infinite weights ({name}); {AGAIN}")
    except GsearchError:
        raise
    except Exception as e:
        raise GsearchError(f"cannot read the weights of {path} ({first_line(e)}); {AGAIN}") from None


def check_state(state, path: Path, manifest: ExportManifest) -> None:
    """A state_dict of tensors whose shapes are exactly those of the model model.json describes
    (its configs: one, or an ensemble's members; its preprocessing), checked before anything is
    built (a width of 10^9 in model.json allocates nothing), every floating tensor finite."""
    import torch  # lazy: only the torch backend reads model.pt

    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise GsearchError(f"{path} is not a state_dict of named tensors; {AGAIN}")
    encoded = manifest.encoding is not None and not manifest.encoding.is_identity
    n_inputs, n_outputs = manifest.n_inputs, manifest.n_outputs
    for i, config in enumerate(manifest.configs):
        prefix = ("network." if encoded else "") + (f"members.{i}." if manifest.ensemble else "")
        member = f"member {i}'s" if manifest.ensemble else "the"
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.weight")
        layers = sorted((int(m.group(1)), state[k]) for k in state
                        if (m := pattern.fullmatch(k)) and state[k].dim() == 2)
        if not layers:
            raise GsearchError(f"{path} has no layers for {member} model that {META_FILE} describes; {AGAIN}")
        weights = [w for _, w in layers]
        inputs = "features" if not encoded else "inputs after its preprocessing"
        if weights[0].shape[1] != n_inputs:
            raise GsearchError(f"{META_FILE} lists {n_inputs} {inputs} but {member} first layer "
                               f"of {path} takes {weights[0].shape[1]}; {AGAIN}")
        if weights[-1].shape[0] != n_outputs:
            what = "outputs" if manifest.regression else "classes"
            raise GsearchError(f"{META_FILE} lists {n_outputs} {what} but {member} last layer "
                               f"of {path} has {weights[-1].shape[0]} outputs; {AGAIN}")
        widths = sorted({w.shape[0] for w in weights[:-1]})
        if len(weights) - 1 != config.n_layers or widths not in ([], [config.width]):
            raise GsearchError(f"{META_FILE}'s hyperparameters (n_layers={config.n_layers}, width="
                               f"{config.width}) do not match {member} layers in {path} "
                               f"({len(weights) - 1} hidden, width {widths[0] if widths else '-'}); {AGAIN}")
    # every size is now the file's own: build on the meta device (no memory) and compare all
    with torch.device("meta"):
        model = build_exported(manifest)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or extra or wrong:
        what = (f"no tensor {missing[0]!r}" if missing else f"an unexpected tensor {extra[0]!r}" if extra
                else f"{wrong[0]!r} of shape {list(state[wrong[0]].shape)}, not {list(expected[wrong[0]])}")
        raise GsearchError(f"{path} does not match {META_FILE}'s hyperparameters ({what}); {AGAIN}")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise GsearchError(f"{path} holds NaN or infinite weights ({key}); {AGAIN}")
