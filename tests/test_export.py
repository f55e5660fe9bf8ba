"""export-best: retrain, held-out test, self-contained model folder, parity, safe loading."""

import hashlib
import json
import pickle

import numpy as np
import optuna
import pytest
import torch
from conftest import GTZAN_CSV

from gsearch import GsearchError
from gsearch.data.load import load_dataset
from gsearch.data.schema import FEATURE_NAMES, GENRES
from gsearch.models.manifest import meta_digest
from gsearch.models.predict import ExportedModel
from gsearch.search.protocol import Protocol


@pytest.fixture(scope="module")
def real_export(tmp_path_factory):
    """A 2-trial search on the real file (or its bundled copy), exported (about 20 s)."""
    from click.testing import CliRunner

    from gsearch.cli import main

    folder = tmp_path_factory.mktemp("real")
    url = f"sqlite:///{folder / 's.db'}"
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--trials", "2", "--data", str(GTZAN_CSV), "--storage", url,
                                  "--study", "t", "--seed", "1", "--pruner", "none"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["export-best", "--storage", url, "--study", "t",
                                  "--out", str(folder / "exp")])
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_export_writes_a_self_contained_folder(real_export):
    folder, output = real_export
    out = folder / "exp"
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.png", "model.json", "model.onnx", "model.pt", "report.json"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == list(GENRES) and meta["features"] == list(FEATURE_NAMES)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{folder / 's.db'}")
    assert meta["trial_number"] == study.best_trial.number
    best = meta["members"][0]["hyperparameters"] if "members" in meta else meta["hyperparameters"]
    assert best["width"] == study.best_trial.params["width"]
    assert meta["validation_accuracy"] == round(study.best_value, 4)
    assert meta["data_sha256"] == study.user_attrs["data_sha256"]
    assert {"torch", "optuna", "numpy"} <= set(meta["versions"])
    report = json.loads((out / "report.json").read_text())
    matrix = report["test"]["confusion_matrix"]
    assert report["test"]["n"] == 200 and np.array(matrix["rows"]).sum() == 200
    assert matrix["labels"] == list(GENRES)
    assert report["test_accuracy"] == meta["test_accuracy"] and f"{meta['test_accuracy']:.3f}" in output
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnx_and_torch_agree_and_beat_chance_on_held_out_rows(real_export):
    out = real_export[0] / "exp"
    ds = load_dataset(GTZAN_CSV)
    test = Protocol(split_seed=42).split(ds).test
    torch_model, onnx_model = ExportedModel(out, "torch"), ExportedModel(out, "onnx")
    p_torch, p_onnx = torch_model.predict_proba(ds.X), onnx_model.predict_proba(ds.X)
    np.testing.assert_allclose(p_torch, p_onnx, atol=1e-4)
    assert (p_torch.argmax(1) == p_onnx.argmax(1)).all()
    accuracy = (onnx_model.predict(ds.X[test]) == ds.y[test]).mean()
    meta = json.loads((out / "model.json").read_text())
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9)
    assert accuracy > 0.5  # 10 genres: chance is 0.1


def test_export_without_completed_trial_is_a_clear_error(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="empty", storage=url)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    result = cli("export-best", "--storage", url, "--study", "empty", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "no completed trial" in result.output
    assert not (tmp_path / "x").exists()
    result = cli("export-best", "--storage", url, "--study", "other", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "studies: empty" in result.output


def test_export_refuses_changed_data(cli, make_csv, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    csv = make_csv()
    assert cli("run", "--trials", 2, "--data", csv, "--storage", url, "--study", "t",
               "--pruner", "none").exit_code == 0
    csv.write_text(csv.read_text().replace("blues.00000.wav", "blues.99999.wav"))
    result = cli("export-best", "--storage", url, "--study", "t", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "data_sha256" in result.output


def test_loading_never_unpickles_arbitrary_objects(real_export, tmp_path):
    out = real_export[0] / "exp"
    for name in ("model.json", "model.onnx"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "model.pt").write_bytes(pickle.dumps({"weights": Payload()}))
    with pytest.raises(GsearchError, match="model.pt does not match the SHA-256"):
        ExportedModel(tmp_path, "torch")  # the recorded digest answers first
    # with the digests recomputed (anyone can), weights_only is what refuses the payload
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["sha256"]["model.pt"] = hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
    meta["meta_sha256"] = meta_digest(meta)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(GsearchError, match="cannot load"):
        ExportedModel(tmp_path, "torch")
    assert not marker.exists()


def test_exported_state_dict_is_plain_tensors(real_export):
    state = torch.load(real_export[0] / "exp" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    # standardization travels with the model (each member's, in an ensemble)
    assert any(k.endswith("0.mean") for k in state) and any(k.endswith("0.std") for k in state)


def test_not_an_export_folder(tmp_path):
    with pytest.raises(GsearchError, match="not a gsearch export"):
        ExportedModel(tmp_path)
