"""export-best --ensemble K: one module, one ONNX graph, reloadable without unpickling."""

import json

import numpy as np
import optuna
import pytest
import torch

from gsearch import GsearchError
from gsearch.data.load import load_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.manifest import INTEGRITY_FIELDS
from gsearch.models.mlp import build_mlp
from gsearch.models.predict import ExportedModel
from gsearch.search.export import trial_config
from test_evaluate import tiny_space  # noqa: F401  (fixture)


@pytest.fixture
def searched(make_csv, tmp_path, cli, tiny_space):  # noqa: F811
    csv, db = make_csv(tracks_per_class=12), f"sqlite:///{tmp_path / 's.db'}"
    assert cli("run", "--data", csv, "--storage", db, "--trials", 3, "--seed", 1,
               "--pruner", "none", space=tiny_space).exit_code == 0
    return csv, db


def test_ensemble_export_is_one_graph_matching_torch(searched, tmp_path, cli):
    csv, db = searched
    out = tmp_path / "ens"
    result = cli("export-best", "--storage", db, "--out", out)  # default: top 5, here all 3
    assert result.exit_code == 0, result.output
    assert "top-3 trials" in result.output and "ensemble (their mean probability)" in result.output
    meta = json.loads((out / "model.json").read_text())
    study = optuna.load_study(study_name="gtzan-mlp", storage=db)
    ranked = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: (-t.value, t.number))
    assert meta["format"] == "gsearch-mlp-ensemble/2"
    assert [m["trial"] for m in meta["members"]] == [t.number for t in ranked[:3]]
    assert [TrialConfig.from_dict(m["hyperparameters"]) for m in meta["members"]] == \
        [trial_config(t) for t in ranked[:3]]   # what each trained, whole
    assert "hyperparameters" not in meta  # each member's are under members, none at the top

    X = load_dataset(csv).X[:25]
    torch_model, onnx_model = ExportedModel(out, "torch"), ExportedModel(out, "onnx")
    p_torch, p_onnx = torch_model.predict_proba(X), onnx_model.predict_proba(X)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    np.testing.assert_allclose(p_torch.sum(axis=1), 1.0, atol=1e-5)
    assert (onnx_model.predict(X) == p_torch.argmax(axis=1)).all()

    # the output is the mean of the members' own probabilities
    state = torch.load(out / "model.pt", weights_only=True)
    members = []
    for i, config in enumerate(torch_model.members):
        member = build_mlp(config, X.shape[1], len(meta["classes"]))
        prefix = f"members.{i}."
        member.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        with torch.inference_mode():
            members.append(member.eval()(torch.from_numpy(X)).softmax(dim=1).numpy())
    np.testing.assert_allclose(p_torch, np.mean(members, axis=0), atol=1e-5)
    report = json.loads((out / "report.json").read_text())
    assert len(report["members"]) == 3 and report["test"]["n"] == meta["n_test"]

    # an export of the first ensemble format (members: hyperparameter dicts, written before
    # model.json recorded digests) still loads, unverified
    old = {**meta, "format": "gsearch-mlp-ensemble/1", "members": [m["hyperparameters"] for m in meta["members"]]}
    for key in INTEGRITY_FIELDS:
        del old[key]
    (out / "model.json").write_text(json.dumps(old))
    old_model = ExportedModel(out, "torch")
    assert not old_model.verified and torch_model.verified
    np.testing.assert_allclose(old_model.predict_proba(X), p_torch, atol=1e-6)

    too_many = cli("export-best", "--storage", db, "--out", tmp_path / "x", "--ensemble", 9)
    assert too_many.exit_code == 1 and too_many.output.startswith("error: --ensemble 9 needs 9")
    assert not (tmp_path / "x").exists()


def test_single_model_format_still_exports_and_loads(searched, tmp_path, cli):
    csv, db = searched
    out = tmp_path / "one"
    assert cli("export-best", "--storage", db, "--out", out, "--ensemble", 1).exit_code == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == "gsearch-mlp/1" and "members" not in meta
    X = load_dataset(csv).X[:10]
    model = ExportedModel(out, "torch")
    assert model.members == []
    np.testing.assert_allclose(ExportedModel(out, "onnx").predict_proba(X), model.predict_proba(X),
                               atol=1e-5)

    (out / "model.json").write_text(json.dumps({**meta, "format": "gsearch-mlp/99"}))
    with pytest.raises(GsearchError, match="format 'gsearch-mlp/99'"):
        ExportedModel(out)
