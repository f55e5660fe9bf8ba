"""Groups: no track, or on GTZAN no artist, on two sides of any split (holdout, validation,
CV folds), through the protocol, the CLI and the study's guard."""

import json

import numpy as np
import optuna
import pytest

from gsearch.data.artists import artist_map, by_artist
from gsearch.data.load import BUNDLED_DATA, load_dataset
from gsearch.data.split import kfold_splits
from gsearch.models.config import TrialConfig
from gsearch.search.protocol import Protocol


def tiny(trial):
    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 16), dropout=0.0,
                       batch_size=64, epochs=3)


@pytest.fixture(scope="module")
def gtzan():
    return load_dataset(BUNDLED_DATA)   # the same table as ../shared's features_30_sec.csv


def sides(ds, *parts):
    return [set(ds.groups[rows]) for rows in parts]


@pytest.mark.parametrize("protocol", [Protocol(groups="artist", test_fold=1),
                                      Protocol(groups="artist", test_fold=3, cv=3),
                                      Protocol(groups="artist", split_seed=0)],
                         ids=["fold1", "fold3-cv3", "seed0"])
def test_no_artist_is_on_two_sides_of_any_split(gtzan, protocol):
    ds = protocol.prepare(gtzan)
    assert len(ds.y) == len(artist_map()) == 948 and ds.grouping == "artist"
    assert ds.n_groups == artist_map()["artist"].nunique()
    split = protocol.split(ds)
    train, val, test = sides(ds, split.train, split.val, split.test)
    assert not (train & val or train & test or val & test)
    assert len(split.train) + len(split.val) + len(split.test) == len(ds.y)
    if protocol.test_fold is not None:   # the published fold, exactly
        assert set(split.test) == set(np.flatnonzero(ds.folds == protocol.test_fold))
    for a, b in kfold_splits(ds, split.train_val, 3, protocol.split_seed):
        assert not set(ds.groups[a]) & set(ds.groups[b])
    # a clip keeps its genre: the map's genre is the filename's, and the label's
    genres = np.array([name.split(".")[0] for name in ds.filenames])
    assert (genres == np.array(ds.classes)[ds.y]).all()


def test_segments_of_a_clip_follow_its_artist(gtzan):
    segments = gtzan.filenames[:20]   # a 3-second table names rows blues.00000.0.wav ...
    rows = [f"{name[:-4]}.{k}.wav" for name in segments for k in range(3)]
    from dataclasses import replace
    ds = replace(gtzan, X=np.repeat(gtzan.X[:20], 3, axis=0), y=np.repeat(gtzan.y[:20], 3),
                 filenames=np.array(rows), tracks=np.repeat(gtzan.tracks[:20], 3),
                 groups=np.repeat(gtzan.groups[:20], 3))
    grouped = by_artist(ds)
    known = artist_map().loc[gtzan.tracks[:20]]
    assert len(grouped.y) == 3 * len(known)
    assert list(grouped.groups[::3]) == [f"artist{a}" for a in known["artist"]]


def test_run_by_artist_is_recorded_guarded_and_exported(cli, tmp_path):
    db, out = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "export"
    result = cli("run", "--trials", 2, "--storage", db, "--groups", "artist", "--test-fold", 2,
                 "--pruner", "none", space=tiny)
    assert result.exit_code == 0, result.output
    assert "948 tracks with a known artist" in result.output and "test artist fold 2" in result.output
    study = optuna.load_study(study_name="gtzan-mlp", storage=db)
    assert (study.user_attrs["groups"], study.user_attrs["test_fold"]) == ("artist", 2)
    assert study.user_attrs["n_rows"] == 948

    refused = cli("run", "--trials", 1, "--storage", db, space=tiny)   # by track: another protocol
    assert refused.exit_code == 1 and refused.output.startswith("error: ")
    assert "groups='artist'" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name="gtzan-mlp", storage=db).trials) == 2

    assert cli("export-best", "--storage", db, "--out", out).exit_code == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["split"]["groups"] == "artist" and meta["split"]["test_fold"] == 2
    assert meta["n_test"] == int((by_artist(load_dataset(BUNDLED_DATA)).folds == 2).sum())


@pytest.mark.parametrize("args, message", [
    (["run", "--test-fold", "1"], "add --groups artist"),
    (["run", "--groups", "artist", "--test-fold", "4"], "is not in the range 1<=x<=3"),
    (["evaluate", "--groups", "artist", "--split-seeds", "1,2"], "instead of --split-seeds"),
    (["evaluate", "--groups", "artist", "--test-folds", "1,4"], "among 1, 2, 3"),
    (["evaluate", "--test-folds", "1"], "add --groups"),
])
def test_bad_group_options_fail_in_one_line_before_any_store(cli, tmp_path, args, message):
    db = tmp_path / "s.db"
    result = cli(*args, "--storage", f"sqlite:///{db}")
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert not db.exists()


def test_artists_of_a_table_that_is_not_gtzan_are_refused(cli, make_csv, tmp_path):
    from conftest import synthetic_frame
    frame = synthetic_frame()
    frame["filename"] = [f"song{i}.wav" for i in range(len(frame))]
    csv = make_csv(frame=frame)
    db = tmp_path / "s.db"
    result = cli("run", "--data", csv, "--groups", "artist", "--storage", f"sqlite:///{db}")
    assert result.exit_code == 1 and "no row is a GTZAN clip with a known artist" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not db.exists()
