"""The search end to end through the CLI: run, resume, prune, guard, bad inputs."""

import hashlib
import re
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from conftest import synthetic_frame

from gsearch.data.load import load_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.population import DivergedError, TrainData, train
from gsearch.search.parallel import run_search
from gsearch.search.storage import open_storage, safe_url

TrialState = optuna.trial.TrialState


def storage_url(tmp_path):
    return f"sqlite:///{tmp_path / 's.db'}"


def load(tmp_path, name="t"):
    return optuna.load_study(study_name=name, storage=storage_url(tmp_path))


def test_short_search_persists_trials_with_curves_and_attributes(cli, make_csv, tmp_path):
    csv = make_csv()
    result = cli("run", "--trials", 3, "--data", csv, "--storage", storage_url(tmp_path),
                 "--study", "t", "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "3 trials" in result.output and "best trial #" in result.output
    study = load(tmp_path)
    assert len(study.trials) == 3
    assert study.metric_names == ["validation accuracy"]
    assert study.user_attrs["data_sha256"] == load_dataset(csv).sha256
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done, "no trial completed"
    for trial in done:
        assert set(trial.params) >= {"n_layers", "width", "dropout", "batch_norm", "lr", "epochs",
                                     "batch_size", "weight_decay"}
        assert len(trial.intermediate_values) == trial.params["epochs"]  # a report per epoch
        assert trial.user_attrs["epochs_run"] == trial.params["epochs"]
        assert trial.user_attrs["n_params"] > 0 and trial.user_attrs["device"] == "cpu"
        assert trial.user_attrs["train_seconds"] > 0
        assert trial.value == trial.intermediate_values[trial.params["epochs"] - 1]
    assert max(t.value for t in done) > 0.5  # 4 classes: chance is 0.25


def test_rerun_resumes_with_n_more_trials(cli, make_csv, tmp_path):
    args = ["--data", make_csv(), "--storage", storage_url(tmp_path), "--study", "t", "--seed", 1]
    assert cli("run", "--trials", 2, *args).exit_code == 0
    first = [t.params for t in load(tmp_path).trials]
    assert cli("run", "--trials", 2, *args).exit_code == 0
    trials = load(tmp_path).trials
    assert len(trials) == 4 and [t.params for t in trials[:2]] == first
    assert trials[2].params != trials[0].params  # the seeded sampler continues, no replay


def test_seed_makes_a_study_reproducible(cli, make_csv, tmp_path):
    csv = make_csv()
    values = []
    for name in ("a", "b"):
        assert cli("run", "--trials", 2, "--data", csv, "--storage", storage_url(tmp_path),
                   "--study", name, "--seed", 7).exit_code == 0
        values.append([(t.params, t.value) for t in load(tmp_path, name).trials])
    assert values[0] == values[1]


def test_pruner_stops_hopeless_trials_early(make_csv):
    ds = load_dataset(make_csv())
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=2))
    run_search(study, ds, trials=2, device=torch.device("cpu"), population=1)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        assert len(trial.intermediate_values) == 3 == trial.user_attrs["epochs_run"]
        assert "pruner stopped it after epoch 3" in trial.user_attrs["pruned_reason"]


def test_cli_pruners_and_samplers_run(cli, make_csv, tmp_path):
    for i, (pruner, sampler) in enumerate([("hyperband", "random"), ("none", "tpe")]):
        result = cli("run", "--trials", 2, "--data", make_csv(), "--storage", storage_url(tmp_path),
                     "--study", f"s{i}", "--pruner", pruner, "--sampler", sampler)
        assert result.exit_code == 0, result.output
        assert len(load(tmp_path, f"s{i}").trials) == 2


def test_asha_prunes_only_at_its_rungs(cli, make_csv, tmp_path):
    result = cli("run", "--trials", 9, "--data", make_csv(), "--storage", storage_url(tmp_path),
                 "--study", "asha", "--pruner", "asha", "--seed", 3, "--fix", "epochs=30")
    assert result.exit_code == 0, result.output
    trials = load(tmp_path, "asha").trials
    pruned = [len(t.intermediate_values) for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "successive halving pruned nothing in 9 trials"
    assert set(pruned) <= {6, 16}   # stopped right after epoch 5 or 15 (steps count from 0)
    assert all(len(t.intermediate_values) == 30 for t in trials if t.state == TrialState.COMPLETE)


def test_diverging_loss_ends_the_trial_not_the_study(make_csv):
    ds = load_dataset(make_csv())
    data = TrainData(ds.X, ds.y, 4, ds.X, ds.y)
    with pytest.raises(DivergedError, match="nan"):
        train(TrialConfig(n_layers=3, width=64, batch_norm=False, dropout=0, lr=1e15,
                          weight_decay=0, epochs=5), data)

    def explosive(trial):
        return TrialConfig(n_layers=3, width=64, batch_norm=False, dropout=0, lr=1e15,
                           weight_decay=0, epochs=5 + trial.suggest_int("k", 0, 0))

    study = optuna.create_study(direction="maximize")
    run_search(study, ds, trials=2, space=explosive, device=torch.device("cpu"), population=1)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert "training loss became nan" in study.trials[0].user_attrs["pruned_reason"]


def test_other_data_is_refused_on_an_existing_study(cli, make_csv, tmp_path):
    url = storage_url(tmp_path)
    assert cli("run", "--trials", 1, "--data", make_csv("a.csv"), "--storage", url,
               "--study", "t").exit_code == 0
    before = digest(tmp_path / "s.db")
    result = cli("run", "--trials", 1, "--data", make_csv("b.csv", seed=5), "--storage", url,
                 "--study", "t")
    assert result.exit_code == 1 and "data_sha256" in result.output and "--study" in result.output
    result = cli("run", "--trials", 1, "--data", make_csv("a.csv"), "--storage", url,
                 "--study", "t", "--split-seed", 3)
    assert result.exit_code == 1 and "split_seed" in result.output
    assert digest(tmp_path / "s.db") == before and len(load(tmp_path).trials) == 1


@pytest.fixture(scope="module")
def one_trial_store(tmp_path_factory):
    """A storage holding study 't' with one finished trial, made once per module."""
    from click.testing import CliRunner

    from gsearch.cli import main

    folder = tmp_path_factory.mktemp("store")
    synthetic_frame().to_csv(folder / "features.csv", index=False)
    result = CliRunner().invoke(main, ["run", "--trials", "1", "--data", str(folder / "features.csv"),
                                       "--storage", f"sqlite:///{folder / 's.db'}", "--study", "t"])
    assert result.exit_code == 0, result.output
    return folder / "s.db"


def test_other_data_is_named_shortly_by_file_and_digest_prefix(cli, make_csv, tmp_path):
    from gsearch.data.load import BUNDLED_DATA, load_dataset

    url = storage_url(tmp_path)
    assert cli("run", "--trials", 1, "--data", BUNDLED_DATA, "--storage", url, "--study", "t",
               "--fix", "epochs=20", "--fix", "n_layers=1", "--fix", "width=32").exit_code == 0
    other = make_csv("mine.csv")
    result = cli("run", "--trials", 1, "--data", other, "--storage", url, "--study", "t")
    [line] = result.output.strip().splitlines()
    bundled, mine = load_dataset(BUNDLED_DATA).sha256, load_dataset(other).sha256
    assert line == (f"error: study 't' was made with bundled GTZAN features_30_sec.csv (data_sha256 "
                    f"{bundled[:12]}...), this run reads mine.csv (data_sha256 {mine[:12]}...); "
                    "use the same data and split options, or a new --study name")


def digest(path):
    """The content of a SQLite store, with what its write-ahead log holds (the file's bytes
    alone would miss a change still in the -wal file)."""
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()


def nan_csv(make_csv):
    frame = synthetic_frame()
    frame.loc[5, "rms_var"] = np.nan
    return make_csv("nan.csv", frame=frame)


def unknown_label_csv(make_csv):
    frame = synthetic_frame()
    frame.loc[0, "label"] = "polka"
    return make_csv("unknown.csv", frame=frame)


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file: .*nope.csv"),
    ("schema", "lacks 1 feature column"),
    ("nan", "'rms_var'"),
    ("unknown", "class 'polka' has a single track; a stratified test split needs at least 2"),
    ("bad_url", "bad storage URL"),
    ("no_folder", "does not exist"),
    ("cuda", "CUDA is not available"),
])
def test_bad_inputs_fail_with_one_line_and_leave_the_store_untouched(
        cli, make_csv, tmp_path, one_trial_store, case, expected):
    url = storage_url(tmp_path)
    good = make_csv()
    shutil.copy(one_trial_store, tmp_path / "s.db")
    before = digest(tmp_path / "s.db")
    args = {"data": good, "storage": url, "device": "cpu"}
    if case == "missing":
        args["data"] = tmp_path / "nope.csv"
    elif case == "schema":
        args["data"] = make_csv("schema.csv", frame=synthetic_frame().drop(columns=["tempo"]))
    elif case == "nan":
        args["data"] = nan_csv(make_csv)
    elif case == "unknown":
        args["data"] = unknown_label_csv(make_csv)
    elif case == "bad_url":
        args["storage"] = "notadb:://x"
    elif case == "no_folder":
        args["storage"] = f"sqlite:///{tmp_path}/missing/dir/s.db"
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        args["device"] = "cuda"
    result = cli("run", "--trials", 1, "--data", args["data"], "--storage", args["storage"],
                 "--study", "t", "--device", args["device"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert digest(tmp_path / "s.db") == before
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("option", [["--trials", "0"], ["--test-size", "1.5"], ["--pruner", "magic"]])
def test_impossible_options_are_usage_errors(cli, option, tmp_path):
    result = cli("run", *option, "--storage", storage_url(tmp_path))
    assert result.exit_code == 2 and "Invalid value" in result.output
    assert not (tmp_path / "s.db").exists()


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gsearch", "run", "--data",
                           str(tmp_path / "none.csv"), "--storage", storage_url(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: no such file: ")
    assert not (tmp_path / "s.db").exists()


def test_password_never_shown(cli, tmp_path):
    assert safe_url("postgresql://me:s3cret@db.example/x") == "postgresql://me:***@db.example/x"
    result = cli("studies", "--storage", "postgresql://me:s3cret@127.0.0.1:9/x")
    assert result.exit_code == 1 and "s3cret" not in result.output and "***" in result.output


def test_studies_lists_counts(cli, make_csv, tmp_path):
    assert cli("run", "--trials", 2, "--data", make_csv(), "--storage", storage_url(tmp_path),
               "--study", "listed").exit_code == 0
    result = cli("studies", "--storage", storage_url(tmp_path))
    row = [line for line in result.output.splitlines() if line.startswith("listed")][0].split()
    assert row[1] == "2" and int(row[2]) + int(row[3]) + int(row[4]) == 2
    missing = cli("studies", "--storage", f"sqlite:///{tmp_path}/none.db")
    assert missing.exit_code == 1 and "gsearch run" in missing.output
    assert not (tmp_path / "none.db").exists()


def test_open_storage_creates_tables_for_a_new_file(tmp_path):
    open_storage(storage_url(tmp_path))
    assert (tmp_path / "s.db").exists()


def test_warm_start_runs_an_earlier_studys_best_configurations_first(cli, make_csv, tmp_path):
    csv, other = make_csv(), f"sqlite:///{tmp_path / 'other.db'}"
    assert cli("run", "--trials", 4, "--data", csv, "--storage", other, "--study", "old",
               "--seed", 1, "--fix", "epochs=40", "--pruner", "none").exit_code == 0
    old = sorted(optuna.load_study(study_name="old", storage=other).trials, key=lambda t: (-t.value, t.number))
    args = ["--data", csv, "--storage", storage_url(tmp_path), "--study", "t", "--seed", 2,
            "--warm-start", "old", "--warm-start-storage", other]
    result = cli("run", "--trials", 3, *args, "--fix", "epochs=30")
    assert result.exit_code == 0, result.output
    assert "warm start: 3 of the best configurations of study 'old'" in result.output
    new = load(tmp_path).trials
    assert [t.params for t in new] == [{**t.params, "epochs": 30} for t in old[:3]]  # --fix wins
    assert len(new) == 3 and TrialState.WAITING not in {t.state for t in new}   # none left over
    result = cli("run", "--trials", 4, *args, "--fix", "epochs=30")   # each runs once per study
    assert result.exit_code == 0 and "warm start: 1 of the best" in result.output
    assert [t.params for t in load(tmp_path).trials][3] == {**old[3].params, "epochs": 30}


def test_a_bad_warm_start_leaves_the_store_untouched(cli, make_csv, tmp_path, one_trial_store):
    shutil.copy(one_trial_store, tmp_path / "s.db")
    before = digest(tmp_path / "s.db")
    for source in (["--warm-start", "nope"],
                   ["--warm-start", "t", "--warm-start-storage", f"sqlite:///{tmp_path / 'none.db'}"]):
        result = cli("run", "--trials", 1, "--data", make_csv(), "--storage", storage_url(tmp_path),
                     "--study", "new", *source)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert re.search("no study named 'nope'|none.db", lines[0]), lines[0]
    assert digest(tmp_path / "s.db") == before and not (tmp_path / "none.db").exists()
