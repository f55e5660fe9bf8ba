"""Loading, validation and splits (data/)."""

import numpy as np
import pytest

from gsearch.data.load import DataError, load_dataset, read_features
from gsearch.data.schema import FEATURE_NAMES, GENRES
from gsearch.data.split import fit_scaler, kfold_splits, split_dataset
from conftest import synthetic_frame


def test_real_file_loads_with_all_genres(real_csv):
    ds = load_dataset(real_csv)
    assert ds.X.shape == (1000, 57) and ds.X.dtype == np.float32
    assert ds.classes == GENRES
    assert np.bincount(ds.y).tolist() == [100] * 10
    assert ds.n_tracks == 1000 and len(ds.sha256) == 64


def test_real_split_is_stratified_and_disjoint(real_csv):
    ds = load_dataset(real_csv)
    split = split_dataset(ds, test_size=0.2, val_size=0.2, seed=42)
    assert (len(split.train), len(split.val), len(split.test)) == (640, 160, 200)
    assert np.bincount(ds.y[split.test]).tolist() == [20] * 10
    assert not set(split.test) & set(split.train_val)
    again = split_dataset(ds, test_size=0.2, val_size=0.2, seed=42)
    assert np.array_equal(again.test, split.test)
    other = split_dataset(ds, test_size=0.2, val_size=0.2, seed=0)
    assert not np.array_equal(other.test, split.test)


def test_segments_of_a_track_never_cross_a_split(make_csv):
    ds = load_dataset(make_csv(segments=10, tracks_per_class=20))
    assert len(ds.y) == 4 * 20 * 10 and ds.n_tracks == 80
    assert ds.groups[0] == "blues.00000"  # blues.00000.K.wav -> blues.00000
    split = split_dataset(ds, seed=3)
    sides = [set(ds.groups[rows]) for rows in (split.train, split.val, split.test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sum(len(s) for s in sides) == 80
    assert len(split.test) == 16 * 10  # 20% of the tracks, all 10 segments each
    for train_rows, val_rows in kfold_splits(ds, split.train_val, 4, seed=0):
        assert not set(ds.groups[train_rows]) & set(ds.groups[val_rows])


def test_whole_track_rows_are_their_own_group(make_csv):
    ds = load_dataset(make_csv(tracks_per_class=10))
    assert ds.n_tracks == len(ds.y) == 40


def test_scaler_uses_only_the_rows_it_is_given(make_csv):
    ds = load_dataset(make_csv())
    split = split_dataset(ds)
    mean, std = fit_scaler(ds.X[split.train])
    np.testing.assert_allclose(mean, ds.X[split.train].mean(axis=0), rtol=1e-4)
    assert not np.allclose(mean, ds.X.mean(axis=0), rtol=1e-4)
    const = np.ones((5, 3), np.float32)
    assert fit_scaler(const)[1].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["tempo"]), "lacks 1 feature column"),
    (lambda f: f.assign(extra=1.0), "unexpected column(s) ['extra']"),
    (lambda f: f.drop(columns=["label"]), "no 'label' column"),
    (lambda f: f.astype({"rms_mean": object}).assign(
        rms_mean=lambda d: d.rms_mean.where(d.index != 7, "loud")), "'rms_mean'"),
    (lambda f: f.assign(mfcc3_var=lambda d: d.mfcc3_var.where(d.index != 4, np.nan)), "data row 5"),
    (lambda f: f.assign(tempo=lambda d: d.tempo.where(d.index != 2, np.inf)), "'tempo'"),
    (lambda f: f.assign(label=lambda d: d.label.where(d.index != 9, "polka")), "unknown label 'polka'"),
    (lambda f: f.assign(label=lambda d: d.label.where(d.index != 3, "")), "missing label at data row 4"),
    (lambda f: f.assign(label="blues"), "at least 2 genres"),
])
def test_bad_files_raise_one_clear_line(make_csv, mutate, message):
    path = make_csv(frame=mutate(synthetic_frame()))
    with pytest.raises(DataError) as err:
        load_dataset(path, classes=GENRES if "polka" in message else None)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_empty_and_folder_paths(tmp_path):
    with pytest.raises(DataError, match="^no such file: .*bundled GTZAN.*GTZAN Dataset - Music Genre Classification"):
        load_dataset(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(",".join(["filename", *FEATURE_NAMES, "label"]) + "\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset(tmp_path / "header.csv")
    with pytest.raises(DataError, match="is a folder"):
        load_dataset(tmp_path)


def test_unlabelled_rows_can_be_read_for_prediction(make_csv):
    path = make_csv(frame=synthetic_frame().drop(columns=["label"]))
    assert read_features(path, require_labels=False).shape[0] == 120


def test_too_few_tracks_for_a_split(make_csv):
    ds = load_dataset(make_csv(tracks_per_class=1))
    with pytest.raises(DataError, match="single track|too few tracks"):
        split_dataset(ds)
