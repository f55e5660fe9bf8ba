"""A tampered, mismatched or damaged export folder is refused in one line, by predict and by
serve, on both backends, before any model is built (models.export: read_meta, read_checked,
check_onnx, check_state)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from conftest import GTZAN_CSV
from onnx import numpy_helper

from gsearch import GsearchError
from gsearch.models.config import TrialConfig
from gsearch.models.export import save_model
from gsearch.models.manifest import (INTEGRITY_FIELDS, META_FILE, MODEL_FILE, ONNX_FILE, ExportManifest,
                                     Member, meta_digest)
from gsearch.models.mlp import Ensemble, build_mlp
from gsearch.models.predict import ExportedModel
from gsearch.serve import create_app

AGAIN = "export the model again"


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    pd.read_csv(GTZAN_CSV).iloc[::100].to_csv(path, index=False)  # 10 rows, one per genre
    return path


@pytest.fixture(scope="module")
def ensemble_export(tmp_path_factory, real_export) -> Path:
    """Two small untrained members: a valid ensemble folder (the checks need no accuracy)."""
    meta = json.loads((real_export / META_FILE).read_text())
    torch.manual_seed(0)
    configs = [TrialConfig(n_layers=1, width=16), TrialConfig(n_layers=2, width=8, batch_norm=False)]
    model = Ensemble([build_mlp(c, len(meta["features"]), len(meta["classes"])) for c in configs])
    out = tmp_path_factory.mktemp("ens") / "export"
    members = tuple(Member(c, trial=i) for i, c in enumerate(configs))
    save_model(model.eval(), ExportManifest(tuple(meta["classes"]), tuple(meta["features"]),
                                            tuple(configs), members, clip_samples=meta["clip_samples"]),
               out)
    return out


def copy_of(source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(source, folder)
    return folder


def read_meta(folder: Path) -> dict:
    return json.loads((folder / META_FILE).read_text())


def write_meta(folder: Path, meta: dict, *, mode: str = "tamper") -> None:
    """tamper: write as is (the recorded digests no longer match); resign: recompute every
    digest as export does, so only the deeper checks can see the damage; old: drop the
    integrity fields, as an export written before they existed."""
    if mode == "resign":
        meta["n_features"], meta["n_classes"] = len(meta["features"]), len(meta["classes"])
        meta["sha256"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                          for name in (ONNX_FILE, MODEL_FILE)}
        meta["meta_sha256"] = meta_digest(meta)
    elif mode == "resign-count":  # digests recomputed over a wrong n_classes
        meta["n_classes"] = len(meta["classes"]) + 1
        meta["meta_sha256"] = meta_digest(meta)
    elif mode == "old":
        for key in INTEGRITY_FIELDS:
            meta.pop(key, None)
    (folder / META_FILE).write_text(json.dumps(meta))


def nan_in_state(folder: Path) -> None:
    state = torch.load(folder / MODEL_FILE, weights_only=True)
    key = next(k for k, v in state.items() if v.dim() == 2)
    state[key][0, 0] = float("nan")
    torch.save(state, folder / MODEL_FILE)


def nan_in_graph(folder: Path) -> None:
    model = onnx.load(folder / ONNX_FILE)
    tensor = next(t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2)
    values = numpy_helper.to_array(tensor).copy()
    values[0, 0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, folder / ONNX_FILE)


def drop_state_key(folder: Path) -> None:
    state = torch.load(folder / MODEL_FILE, weights_only=True)
    state.pop(next(k for k in state if k.endswith("running_mean")))
    torch.save(state, folder / MODEL_FILE)


def wrong_state_shape(folder: Path) -> None:
    state = torch.load(folder / MODEL_FILE, weights_only=True)
    key = next(k for k in state if k.endswith("running_var"))
    state[key] = torch.ones(state[key].shape[0] + 1)
    torch.save(state, folder / MODEL_FILE)


def set_hyper(meta: dict, **values) -> None:
    for target in [m["hyperparameters"] for m in meta.get("members", [])] or [meta["hyperparameters"]]:
        target.update(values)


# name -> (what to do to model.json (and the files), how to write model.json, backends it
# concerns, words the one error line must hold)
CASES = {
    "features reversed": (lambda f, m: m["features"].reverse(), "tamper", ("onnx", "torch"),
                          "changed after export"),
    "classes reversed": (lambda f, m: m["classes"].reverse(), "tamper", ("onnx", "torch"),
                         "changed after export"),
    "11 classes": (lambda f, m: m["classes"].append("polka"), "tamper", ("onnx", "torch"),
                   "changed after export"),
    "unknown feature": (lambda f, m: m["features"].__setitem__(3, "nonsense"), "tamper",
                        ("onnx", "torch"), "changed after export"),
    "width 10^9": (lambda f, m: set_hyper(m, width=10**9), "tamper", ("onnx", "torch"),
                   "changed after export"),
    "NaN in model.pt": (lambda f, m: nan_in_state(f), "tamper", ("torch",),
                        "model.pt does not match the SHA-256"),
    "NaN in model.onnx": (lambda f, m: nan_in_graph(f), "tamper", ("onnx",),
                          "model.onnx does not match the SHA-256"),
    "meta_sha256 deleted": (lambda f, m: m.pop("meta_sha256"), "tamper", ("onnx", "torch"),
                            "but not meta_sha256"),
    # the digests recomputed: the shape and value checks below them
    "11 classes, re-signed": (lambda f, m: m["classes"].append("polka"), "resign", ("onnx", "torch"),
                              "11 classes"),
    "9 classes, re-signed": (lambda f, m: m["classes"].pop(), "resign", ("onnx", "torch"), "9 classes"),
    "56 features, re-signed": (lambda f, m: m["features"].pop(), "resign", ("onnx", "torch"), "56 features"),
    "n_classes edited, re-signed": (lambda f, m: None, "resign-count", ("onnx", "torch"),
                                    "n_classes is 11 but it lists 10"),
    "classes a string": (lambda f, m: m.__setitem__("classes", "blues,jazz"), "resign", ("onnx", "torch"),
                         "'classes' is not a list"),
    "features a string": (lambda f, m: m.__setitem__("features", " ".join(m["features"])), "resign",
                          ("onnx", "torch"), "'features' is not a list"),
    "duplicate class": (lambda f, m: m["classes"].__setitem__(1, m["classes"][0]), "resign",
                        ("onnx", "torch"), "twice"),
    "width 10^9, re-signed": (lambda f, m: set_hyper(m, width=10**9), "resign", ("torch",),
                              "width=1000000000"),
    "n_layers 10^9, re-signed": (lambda f, m: set_hyper(m, n_layers=10**9), "resign", ("torch",),
                                 "n_layers=1000000000"),
    "width a float, re-signed": (lambda f, m: set_hyper(m, width=1.5), "resign", ("onnx", "torch"),
                                 "width=1.5 is not a whole number"),
    "state_dict key missing": (lambda f, m: drop_state_key(f), "resign", ("torch",), "no tensor"),
    "state_dict wrong shape": (lambda f, m: wrong_state_shape(f), "resign", ("torch",), "running_var"),
    "NaN in model.pt, re-signed": (lambda f, m: nan_in_state(f), "resign", ("torch",), "NaN or infinite"),
    "NaN in model.onnx, re-signed": (lambda f, m: nan_in_graph(f), "resign", ("onnx",), "NaN or infinite"),
    # an export older than the digests: the shapes and values are still checked
    "9 classes, old export": (lambda f, m: m["classes"].pop(), "old", ("onnx", "torch"), "9 classes"),
    "NaN in model.pt, old export": (lambda f, m: nan_in_state(f), "old", ("torch",), "NaN or infinite"),
}


def damaged(source: Path, tmp_path: Path, case: str) -> Path:
    change, mode, _, _ = CASES[case]
    folder = copy_of(source, tmp_path)
    meta = read_meta(folder)
    change(folder, meta)
    write_meta(folder, meta, mode=mode)
    return folder


def assert_one_line(result, *words) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for word in (AGAIN, *words):
        assert word in lines[0], lines[0]
    return lines[0]


CASE_BACKENDS = [(case, backend, kind) for case, (_, _, backends, _) in CASES.items()
                 for backend in backends for kind in ("single", "ensemble")]


@pytest.mark.parametrize("case, backend, kind", CASE_BACKENDS)
def test_damaged_export_is_refused_in_one_line(case, backend, kind, cli, real_export, ensemble_export,
                                               rows_csv, tmp_path):
    folder = damaged(real_export if kind == "single" else ensemble_export, tmp_path, case)
    words = CASES[case][3]
    result = cli("predict", "--model", folder, "--backend", backend, rows_csv)
    line = assert_one_line(result, words)
    assert str(folder) in line  # names the file at fault
    with pytest.raises(GsearchError, match="export the model again"):
        create_app(folder, backend=backend, warm_audio=False)  # serve's path: refuses to start


def test_intact_exports_are_verified_and_predict(cli, real_export, ensemble_export, rows_csv):
    for folder in (real_export, ensemble_export):
        meta = read_meta(folder)
        assert meta["n_features"] == len(meta["features"]) and meta["n_classes"] == len(meta["classes"])
        assert meta["sha256"][MODEL_FILE] == hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
        assert meta["meta_sha256"] == meta_digest(meta)
        for backend in ("onnx", "torch"):
            assert ExportedModel(folder, backend).verified
            result = cli("predict", "--model", folder, "--backend", backend, rows_csv)
            assert result.exit_code == 0 and len(result.output.splitlines()) == 10, result.output
    genres = [line.split(": ")[1].split()[0] for line in
              cli("predict", "--model", real_export, rows_csv).output.splitlines()]
    assert sum(g == row.split(".")[0] for g, row in zip(genres, pd.read_csv(rows_csv)["filename"])) >= 7


def test_older_export_without_digests_loads_unverified(cli, real_export, rows_csv, tmp_path):
    """Accepted as before the digests existed (documented): nothing about model.json's own
    content can be verified then, only its shapes against the model files."""
    folder = copy_of(real_export, tmp_path)
    write_meta(folder, read_meta(folder), mode="old")
    X = pd.read_csv(rows_csv)[list(read_meta(folder)["features"])].to_numpy(np.float32)
    for backend in ("onnx", "torch"):
        model = ExportedModel(folder, backend)
        assert not model.verified
        expected = ExportedModel(real_export, backend).predict_proba(X)
        np.testing.assert_allclose(model.predict_proba(X), expected, atol=1e-6)
    # a feature name no table has: it loads (own tables name their own features), and
    # predict says in one line what the CSV lacks
    meta = read_meta(folder)
    meta["features"][3] = "nonsense"
    write_meta(folder, meta, mode="old")
    for backend in ("onnx", "torch"):
        result = cli("predict", "--model", folder, "--backend", backend, rows_csv)
        [line] = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and line.startswith("error: ") and "nonsense" in line, result.output


@pytest.mark.parametrize("fmt", ["gsearch-mlp/9", "gsearch-mlp-ensemble/3", None, 2, ["gsearch-mlp/1"]])
@pytest.mark.parametrize("kind", ["single", "ensemble"])
def test_unknown_format_is_refused_with_the_documented_line(fmt, kind, cli, real_export, ensemble_export,
                                                             rows_csv, tmp_path):
    """A format this gsearch does not know is named as such (docs/export.md), before any field of
    it is read: not "damaged ('hyperparameters')", which an ensemble (no top-level
    hyperparameters) read as a single model would give. Re-signed: the digests all match."""
    folder = copy_of(real_export if kind == "single" else ensemble_export, tmp_path)
    meta = read_meta(folder)
    meta["format"] = fmt
    write_meta(folder, meta, mode="resign")
    for backend in ("onnx", "torch"):
        line = assert_one_line(cli("predict", "--model", folder, "--backend", backend, rows_csv),
                               f"{folder / META_FILE} has format {fmt!r}",
                               "which this gsearch cannot read; upgrade gsearch or")
        assert "damaged" not in line
        with pytest.raises(GsearchError) as refused:
            create_app(folder, backend=backend, warm_audio=False)
        assert f"error: {refused.value}" == line


def test_deeply_nested_model_json_is_one_line(cli, real_export, rows_csv, tmp_path):
    folder = copy_of(real_export, tmp_path)
    (folder / META_FILE).write_text('{"classes": ' + "[" * 200_000 + "]" * 200_000 + "}")
    for backend in ("onnx", "torch"):
        assert_one_line(cli("predict", "--model", folder, "--backend", backend, rows_csv), "nested too deep")
    (folder / META_FILE).write_text("[1, 2]")
    assert_one_line(cli("predict", "--model", folder, rows_csv), "not a JSON object")


@pytest.mark.slow   # starts the server
def test_serve_refuses_to_start_on_a_mismatched_export(real_export, tmp_path):
    """A real `gsearch serve` process: 56 features for a 57-input graph (re-signed, so the
    shape check answers) ends at once with one line, before binding the port."""
    folder = damaged(real_export, tmp_path, "56 features, re-signed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for backend in ("onnx", "torch"):
        done = subprocess.run([sys.executable, "-m", "gsearch", "serve", "--model", str(folder),
                               "--port", str(port), "--backend", backend],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        err = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(err) == 1 and err[0].startswith("error: "), done.stderr
        assert "56 features" in err[0] and AGAIN in err[0] and done.stdout == ""
