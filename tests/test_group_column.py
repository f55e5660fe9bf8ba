"""A group column of one's own (`--group COL`: an artist, a session, a patient): no value on two
sides of any split, recorded and guarded in the study, carried into the export; every bad
group column one line. And the search space sized to the table (space.SearchSpace)."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsearch.data.load import DataError, load_dataset
from gsearch.data.split import kfold_splits
from gsearch.models.config import TrialConfig
from gsearch.search.protocol import Protocol
from gsearch.search.space import SearchSpace
from gsearch.search.study import Strategy


def tiny(trial):
    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 16), dropout=0.0,
                       batch_size=32, epochs=3)


def sessions_table(path, *, rows=240, sessions=24, classes=3, seed=0, mixed=True):
    """Rows of numeric features in `sessions` recording sessions; a session's rows share an
    offset (what a model could memorize), and with `mixed` a session holds several labels."""
    rng = np.random.default_rng(seed)
    session = rng.integers(0, sessions, rows)
    label = rng.integers(0, classes, rows) if mixed else session % classes
    X = rng.normal(0, 1, (rows, 6)) + label[:, None] + rng.normal(0, 2, sessions)[session][:, None]
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    frame["session"] = [f"s{s:02d}" for s in session]
    frame["mood"] = [("calm", "bright", "dark", "warm")[c] for c in label]
    frame.to_csv(path, index=False)
    return frame


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sessions=st.integers(12, 40), mixed=st.booleans(),
       split_seed=st.integers(0, 100), cv=st.sampled_from([1, 3]))
def test_no_group_is_on_two_sides_of_any_split(tmp_path_factory, seed, sessions, mixed, split_seed, cv):
    path = tmp_path_factory.mktemp("t") / "t.csv"
    sessions_table(path, sessions=sessions, seed=seed, mixed=mixed)
    protocol = Protocol(group="session", split_seed=split_seed, cv=cv)
    ds = protocol.prepare(load_dataset(path, label="mood", group="session"))
    assert ds.grouping == "session" and "session" not in ds.features
    try:
        split = protocol.split(ds)
    except DataError as e:   # a draw with too few sessions for some label: one line, said so
        assert "too few" in str(e) or "single" in str(e)
        return
    train, val, test = (set(ds.groups[rows]) for rows in (split.train, split.val, split.test))
    assert not (train & val or train & test or val & test)
    assert len(split.train) + len(split.val) + len(split.test) == len(ds.y)
    for a, b in kfold_splits(ds, split.train_val, 3, split_seed):
        assert not set(ds.groups[a]) & set(ds.groups[b])
    for part in protocol.trial_data(ds):   # what the trials see: grouped folds or the split
        assert len(part.y_train) + len(part.y_val) == len(split.train_val if cv > 1 else
                                                          np.concatenate([split.train, split.val]))


def test_run_by_a_group_column_is_recorded_guarded_and_exported(cli, tmp_path):
    csv, db, out = tmp_path / "moods.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    frame = sessions_table(csv)
    run = cli("run", "--data", csv, "--label", "mood", "--group", "session", "--trials", 2,
              "--storage", db, "--pruner", "none", space=tiny)
    assert run.exit_code == 0, run.output
    assert "groups of column 'session'" in run.output and "no group on two sides" in run.output
    study = optuna.load_study(study_name="moods", storage=db)   # a table of one's own: its name
    assert study.user_attrs["group"] == "session" and "session" not in study.user_attrs["features"]

    refused = cli("run", "--data", csv, "--label", "mood", "--drop", "session", "--trials", 1,
                  "--storage", db, space=tiny)
    assert refused.exit_code == 1 and "group='session'" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name="moods", storage=db).trials) == 2

    exported = cli("export-best", "--storage", db, "--out", out)
    assert exported.exit_code == 0, exported.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["split"]["group"] == "session"
    ds = Protocol(group="session").prepare(load_dataset(csv, label="mood", group="session"))
    test = Protocol(group="session").split(ds).test
    assert meta["n_test"] == len(test)
    test_sessions = set(ds.groups[test])
    assert not test_sessions & set(frame["session"][~frame.index.isin(test)])


@pytest.mark.parametrize("change, options, message", [
    (None, ["--group", "studio"], "has no column 'studio' to group rows by (--group)"),
    ("blank", ["--group", "session"], "column 'session' (--group) has no value at data row 3"),
    (None, ["--group", "mood"], "the label column cannot be the group column"),
    (None, ["--group", "session", "--groups", "artist"], "pass one of them"),
])
def test_a_bad_group_column_fails_in_one_line_before_any_store(cli, tmp_path, change, options, message):
    csv, db = tmp_path / "moods.csv", tmp_path / "s.db"
    frame = sessions_table(csv)
    if change == "blank":
        frame.loc[2, "session"] = ""
        frame.to_csv(csv, index=False)
    result = cli("run", "--data", csv, "--label", "mood", *options, "--storage", f"sqlite:///{db}")
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not db.exists()


def test_segments_of_one_track_in_two_groups_are_refused(tmp_path):
    csv = tmp_path / "segments.csv"
    frame = pd.DataFrame({"filename": ["a.00000.0.wav", "a.00000.1.wav", "b.00000.0.wav"],
                          "length": [66149] * 3, "f0": [0.1, 0.2, 0.3], "label": ["x", "x", "y"],
                          "artist": ["one", "two", "three"]})
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError, match="track 'a.00000' has rows in more than one group"):
        load_dataset(csv, group="artist")


def test_the_search_space_follows_the_rows_a_trial_trains_on(cli, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 5)), columns=list("abcde"))
    frame["label"] = np.where(frame["a"] + frame["b"] > 0, "up", "down")
    csv, db = tmp_path / "big.csv", f"sqlite:///{tmp_path / 's.db'}"
    frame.to_csv(csv, index=False)
    space = SearchSpace(1280)   # 2000 rows: 80% not tested, 80% of that trains
    assert space.batch_sizes == (64, 128, 256) and space.epochs == (18, 90, 9)

    too_long = cli("run", "--data", csv, "--fix", "epochs=100", "--storage", db)
    assert too_long.exit_code == 1 and "sized to 1,280 training rows" in too_long.output
    assert not (tmp_path / "s.db").exists()

    ran = cli("run", "--data", csv, "--trials", 2, "--fix", "epochs=18", "--fix", "width=32",
              "--pruner", "none", "--storage", db)
    assert ran.exit_code == 0, ran.output
    assert "search space: sized to 1,280 training rows: batch size 64/128/256, 18-90 epochs" in ran.output
    study = optuna.load_study(study_name="big", storage=db)
    assert study.user_attrs["space_rows"] == 1280
    for trial in study.trials:
        assert trial.distributions["batch_size"].choices == (64, 128, 256)
        assert trial.user_attrs["epochs_run"] == 18


def test_the_pruner_rungs_scale_with_the_longest_trial():
    gtzan, large = Strategy().make_pruner(), Strategy().make_pruner(SearchSpace(64_000).max_epochs)
    assert (gtzan._min_resource, large._min_resource) == (5, 1)
    median = Strategy(pruner="median")
    assert (median.make_pruner()._n_warmup_steps, median.make_pruner(10)._n_warmup_steps) == (10, 1)
