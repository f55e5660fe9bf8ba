"""The honest objective (CV recorded in the study) and `gsearch evaluate`."""

import json

import numpy as np
import optuna
import pytest
import torch

from gsearch.data.load import load_dataset
from gsearch.models.config import TrialConfig
from gsearch.search.parallel import run_search
from gsearch.search.protocol import Protocol
from gsearch.search.storage import open_storage
from gsearch.search.study import Strategy, open_study


def _tiny_config(trial):
    """A two-parameter space that trains in milliseconds (the real space is tested elsewhere)."""
    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 32, log=True), dropout=0.0,
                       lr=trial.suggest_float("lr", 3e-3, 3e-2, log=True), batch_size=32, epochs=4)


@pytest.fixture
def tiny_space():
    """The space the run and evaluate tests search (cli(..., space=tiny_space))."""
    return _tiny_config


@pytest.fixture
def searched_rows(monkeypatch):
    """{test row indices of a split: every feature row (bytes) its search trained or validated on}."""
    seen: dict[tuple, set[bytes]] = {}
    original = Protocol.trial_data

    def spy(self, ds):
        sets = original(self, ds)
        rows = seen.setdefault(tuple(self.split(ds).test), set())
        for data in sets:
            rows.update(row.tobytes() for part in (data.X_train, data.X_val) for row in part)
        return sets
    monkeypatch.setattr(Protocol, "trial_data", spy)
    return seen


def test_cv_study_scores_trials_on_track_grouped_folds(make_csv, tmp_path, tiny_space, monkeypatch):
    ds = load_dataset(make_csv(segments=3, tracks_per_class=12))
    split = Protocol(split_seed=5).split(ds)
    folds = []
    original = Protocol.trial_data

    def spy(self, *args):
        sets = original(self, *args)
        folds.extend(sets)
        return sets
    monkeypatch.setattr(Protocol, "trial_data", spy)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, "cv", protocol=Protocol(split_seed=5, cv=3), ds=ds,
                       strategy=Strategy("random", "none", seed=0))
    run_search(study, ds, trials=2, space=tiny_space, device=torch.device("cpu"), population=1)

    assert len(folds) == 3  # the study's cv, built once for both trials
    track_of = {row.tobytes(): g for row, g in zip(ds.X, ds.groups)}
    val_tracks = []
    for data in folds:
        train_tracks = {track_of[r.tobytes()] for r in data.X_train}
        val = {track_of[r.tobytes()] for r in data.X_val}
        assert not train_tracks & val  # the 3 segments of a track stay on one side
        val_tracks.append(val)
    assert set().union(*val_tracks) == set(ds.groups[split.train_val])  # folds cover train+val
    assert not set().union(*val_tracks) & set(ds.groups[split.test])
    for trial in study.trials:
        accs = trial.user_attrs["fold_accuracies"]
        assert len(accs) == 3 and trial.value == pytest.approx(np.mean(accs), abs=1e-5)
        assert len(trial.intermediate_values) == 4  # the mean over folds reported every epoch


def test_cv_is_part_of_the_study_and_guarded(make_csv, tmp_path, cli, tiny_space):
    csv, db = make_csv(tracks_per_class=10), f"sqlite:///{tmp_path / 's.db'}"
    assert cli("run", "--data", csv, "--storage", db, "--trials", 1, "--cv", 2,
               space=tiny_space).exit_code == 0
    result = cli("run", "--data", csv, "--storage", db, "--trials", 1, space=tiny_space)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "cv=2" in result.output
    assert len(result.output.strip().splitlines()) == 1
    study = optuna.load_study(study_name="gtzan-mlp", storage=db)
    assert len(study.trials) == 1 and study.user_attrs["cv"] == 2
    assert len(study.trials[0].user_attrs["fold_accuracies"]) == 2


@pytest.mark.slow
def test_evaluate_end_to_end(make_csv, tmp_path, cli, tiny_space, searched_rows):
    csv, db, out = make_csv(tracks_per_class=16), f"sqlite:///{tmp_path / 'eval.db'}", tmp_path / "out"
    args = ["evaluate", "--data", csv, "--split-seeds", "42,0", "--trials", 3, "--cv", 2,
            "--ensemble", 2, "--storage", db, "--out", out, "--sampler", "random"]
    result = cli(*args, space=tiny_space)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.strip().startswith("split seed") and "|" in line)
    for column in ("MLP best", "MLP top-2", "RBF-SVM", "logreg", "HistGB"):
        assert column in header
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ("42", "0")
            and "|" in line}
    assert set(rows) == {"42", "0"}
    mean = next(line for line in lines if "mean ± std test accuracy" in line)
    assert mean.count("±") == 6  # the label and five models

    ds = load_dataset(csv)
    for seed in (42, 0):
        test = Protocol(split_seed=seed).split(ds).test
        searched = searched_rows[tuple(test)]
        assert len(searched) == len(ds.y) - len(test)  # the search saw all of train+val ...
        assert not {row.tobytes() for row in ds.X[test]} & searched  # ... and no test row
        study = optuna.load_study(study_name=f"evaluate-split{seed}-cv2", storage=db)
        attrs = study.user_attrs
        assert (attrs["split_seed"], attrs["cv"], attrs["data_sha256"]) == (seed, 2, ds.sha256)
        assert len(study.trials) == 3
        report = json.loads((out / f"split{seed}" / "report.json").read_text())
        ranked = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
                        key=lambda t: (-t.value, t.number))
        assert [m["trial"] for m in report["members"]] == [t.number for t in ranked[:2]]  # by CV value only
        assert report["validation_accuracy"] == round(ranked[0].value, 4)
        assert f"{report['test_accuracy']:.3f}" in rows[str(seed)]

    again = cli(*args, space=tiny_space)  # each study already has its trials: nothing is searched again
    assert again.exit_code == 0 and "held out" not in again.output
    assert len(optuna.load_study(study_name="evaluate-split0-cv2", storage=db).trials) == 3


@pytest.mark.parametrize("seeds, message", [("4x,2", "integers"), ("1,1", "distinct")])
def test_evaluate_rejects_bad_seeds_before_touching_storage(make_csv, tmp_path, cli, seeds, message):
    db = tmp_path / "eval.db"
    result = cli("evaluate", "--data", make_csv(), "--split-seeds", seeds, "--storage", f"sqlite:///{db}")
    assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not db.exists()


def test_export_retrains_the_configuration_each_trial_searched(make_csv, tmp_path, tiny_space):
    """A space may set fields it does not sample (here n_layers=1, epochs=4, dropout=0,
    batch_size=32): the export retrains what the trials trained, not defaults filled in
    around their sampled parameters."""
    from gsearch.models.predict import ExportedModel
    from gsearch.search.export import export_best

    ds = load_dataset(make_csv(tracks_per_class=10))
    study = open_study(open_storage(f"sqlite:///{tmp_path / 's.db'}"), "kept", protocol=Protocol(),
                       ds=ds, strategy=Strategy("random", "none", seed=0))
    run_search(study, ds, trials=2, space=tiny_space, device=torch.device("cpu"), population=2)
    export_best(study, tmp_path / "out", ds=ds, device=torch.device("cpu"), ensemble=2)
    model = ExportedModel(tmp_path / "out", "torch")
    searched = {t.number: tiny_space(optuna.trial.FixedTrial(t.params)) for t in study.trials}
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert [searched[m["trial"]] for m in meta["members"]] == model.members
    assert {(c.n_layers, c.epochs, c.batch_size, c.dropout) for c in model.members} == {(1, 4, 32, 0.0)}
