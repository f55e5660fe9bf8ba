"""Loading, validation and splits (data/)."""

import codecs
import gzip
import hashlib
import shutil

import numpy as np
import pytest

from gsearch.data.load import (
    BUNDLED_DATA, DEFAULT_DATA, DataError, describe_data, load_dataset, read_features, resolve_data,
)
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
    split = split_dataset(ds, test_size=0.2, val_size=0.2, seed=3)
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
    split = split_dataset(ds, test_size=0.2, val_size=0.2, seed=42)
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
    (lambda f: f.assign(label="blues"), "only 1 class (blues) found"),
])
def test_bad_files_raise_one_clear_line(make_csv, mutate, message):
    path = make_csv(frame=mutate(synthetic_frame()))
    with pytest.raises(DataError) as err:
        load_dataset(path, classes=GENRES if "polka" in message else None)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rows_without_a_label_are_left_out_and_counted(make_csv):
    """An empty label (or one a spreadsheet writes for missing: NaN, NA, null...) leaves its row
    out of the table, counted, instead of stopping the run (issue 33, item 2)."""
    frame = synthetic_frame().assign(label=lambda d: d.label.where(~d.index.isin([3, 9]), ""))
    frame.loc[12, "label"] = "NaN"
    ds = load_dataset(make_csv(frame=frame))
    assert ds.unlabelled == 3 and len(ds.y) == len(frame) - 3
    assert "blues.00003.wav" not in set(ds.filenames) and "blues.00004.wav" in set(ds.filenames)
    with pytest.raises(DataError, match="has no label in any row"):
        load_dataset(make_csv(frame=frame.assign(label="")))


def test_missing_empty_and_folder_paths(tmp_path):
    with pytest.raises(DataError, match="^no such file: .*bundled GTZAN.*GTZAN Dataset - "
                                        "Music Genre Classification"):
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
        split_dataset(ds, test_size=0.2, val_size=0.2, seed=42)


GTZAN_SHA256 = "3fb2e38c281764076c7c1ec79f9e73956a913cffaa38e44cfb94282291e72cfa"


def test_bundled_copy_is_the_kaggle_table_and_fingerprints_as_it(real_csv):
    assert hashlib.sha256(gzip.decompress(BUNDLED_DATA.read_bytes())).hexdigest() == GTZAN_SHA256
    bundled, real = load_dataset(BUNDLED_DATA), load_dataset(real_csv)
    assert bundled.sha256 == real.sha256 == GTZAN_SHA256
    assert np.array_equal(bundled.X, real.X) and np.array_equal(bundled.y, real.y)
    assert bundled.path == str(BUNDLED_DATA) and bundled.clip_samples == 661794
    assert describe_data(bundled) == "bundled GTZAN features_30_sec.csv (1000 tracks)"
    assert describe_data(real) == f"{real_csv.resolve()} (1000 tracks)"


def test_gzip_and_byte_order_marks_read_as_the_plain_file(make_csv, tmp_path):
    plain = make_csv()
    ds = load_dataset(plain)
    text = plain.read_bytes()
    (tmp_path / "f.csv.gz").write_bytes(gzip.compress(text))
    (tmp_path / "gzipped-but-named.csv").write_bytes(gzip.compress(text))
    for name in ("f.csv.gz", "gzipped-but-named.csv"):
        other = load_dataset(tmp_path / name)
        assert other.sha256 == ds.sha256 == hashlib.sha256(text).hexdigest()
        assert np.array_equal(other.X, ds.X)
    (tmp_path / "bom.csv").write_bytes(codecs.BOM_UTF8 + text)
    (tmp_path / "utf16.csv").write_bytes(text.decode().encode("utf-16"))
    for name in ("bom.csv", "utf16.csv"):
        assert np.array_equal(load_dataset(tmp_path / name).X, ds.X)


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04rest", "is a zip archive; unzip it"),
    (b"\x1f\x8b\x08\x00broken", "damaged gzip file"),
    ("filename,tempo\nclip\xe9,1\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 2)"),
])
def test_unreadable_files_say_what_they_are(tmp_path, content, message):
    (tmp_path / "f.csv").write_bytes(content)
    with pytest.raises(DataError, match="^" + str(tmp_path / "f.csv").replace(".", r"\.")) as err:
        load_dataset(tmp_path / "f.csv")
    assert message in str(err.value)


def test_tables_separated_by_semicolons_tabs_or_bars_are_read(make_csv, tmp_path):
    """Spreadsheets in other locales write semicolons; tab-separated files are common: the
    separator is sniffed from the header line (issue 35, item 8), or given with sep=."""
    frame = synthetic_frame()
    expected = load_dataset(make_csv(frame=frame))
    for sep, name in ((";", "semi.csv"), ("\t", "tabs.tsv"), ("|", "bars.csv")):
        frame.to_csv(tmp_path / name, index=False, sep=sep)
        ds = load_dataset(tmp_path / name)
        assert np.array_equal(ds.X, expected.X) and ds.classes == expected.classes
    one_column = tmp_path / "one.csv"
    one_column.write_text("a;b\n1;2\n")   # a comma given: the semicolons are in the values
    with pytest.raises(DataError, match="no 'label' column"):
        load_dataset(one_column, sep=",")


def test_value_errors_name_column_row_and_line(make_csv):
    frame = synthetic_frame()
    frame["tempo"] = frame["tempo"].astype(object)
    frame.loc[6, "tempo"] = "1e39"
    with pytest.raises(DataError, match=r"column 'tempo' has '1e39' at data row 7 \(line 8\), "
                                        "beyond the float32 range"):
        load_dataset(make_csv(frame=frame))
    frame = synthetic_frame().astype({"length": object})
    frame.loc[2, "length"] = "long"
    with pytest.raises(DataError, match="column 'length' has a non-numeric value 'long' at data row 3"):
        load_dataset(make_csv(frame=frame))
    doubled = synthetic_frame()
    with pytest.raises(DataError, match="column 'tempo' more than once"):
        load_dataset(make_csv(frame=doubled[[*doubled.columns, "tempo"]]))


def test_data_resolution_order(tmp_path, monkeypatch, make_csv):
    monkeypatch.chdir(tmp_path)
    assert resolve_data(None) == BUNDLED_DATA and BUNDLED_DATA.is_file()
    DEFAULT_DATA.parent.mkdir(parents=True)
    shutil.copy(make_csv(), DEFAULT_DATA)
    assert resolve_data(None) == DEFAULT_DATA
    assert resolve_data("typo.csv") == tmp_path.joinpath("typo.csv").relative_to(tmp_path)
    with pytest.raises(DataError, match="^no such file: typo.csv;"):
        load_dataset(resolve_data("typo.csv"))


def test_run_without_data_uses_the_bundled_copy_and_resumes_on_the_kaggle_file(
        cli, tmp_path, monkeypatch, real_csv, one_thread):
    from gsearch.search.export import study_data
    from gsearch.search.storage import open_storage
    from gsearch.search.study import load_study

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    fast = ["--trials", 1, "--storage", url, "--study", "b", "--population", 1, "--fix", "epochs=30",
            "--fix", "n_layers=1", "--fix", "width=32", "--fix", "batch_size=128",
            "--pruner", "none", "--seed", 0]
    result = cli("run", *fast)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "data: bundled GTZAN features_30_sec.csv (1000 tracks)"
    result = cli("run", *fast, "--data", real_csv)  # same fingerprint: the study resumes
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"data: {real_csv.resolve()} (1000 tracks)"
    study = load_study(open_storage(url, must_exist=True), "b")
    assert len(study.trials) == 2 and study.user_attrs["data_path"] == str(BUNDLED_DATA)
    ds, split, _ = study_data(study, None)  # what export-best reads
    assert ds.sha256 == GTZAN_SHA256 and len(split.test) == 200
