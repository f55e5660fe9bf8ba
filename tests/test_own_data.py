"""Your own data: any labelled table (here scikit-learn's wine measurements) and a music library
sorted by your own labels, through run, export-best and predict; every bad table one line."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import space_args
from sklearn.datasets import load_wine

from gsearch.data.load import DataError, load_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.predict import ExportedModel, predict_files


def tiny(trial):
    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 16, 32), dropout=0.0,
                       batch_size=32, epochs=trial.suggest_int("epochs", 15, 20))


def wine_frame() -> pd.DataFrame:
    """178 rows, 13 numeric measurements, 3 cultivars; an id column of text, a label column
    of its own name."""
    wine = load_wine(as_frame=True)
    frame = wine.data.copy()
    frame.insert(0, "sample_id", [f"w{i:03d}" for i in range(len(frame))])
    frame["cultivar"] = [("barolo", "grignolino", "barbera")[t] for t in wine.target]
    return frame


@pytest.fixture(scope="module")
def wine_study(tmp_path_factory):
    from click.testing import CliRunner

    from gsearch.cli import main

    folder = tmp_path_factory.mktemp("wine")
    wine_frame().to_csv(folder / "wine.csv", index=False)
    url = f"sqlite:///{folder / 's.db'}"
    runner = CliRunner()
    ran = runner.invoke(main, ["run", "--data", str(folder / "wine.csv"), "--label", "cultivar",
                               "--drop", "sample_id", "--trials", "4", "--storage", url,
                               "--pruner", "none", "--seed", "0", *space_args(tiny)],
                        catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    exported = runner.invoke(main, ["export-best", "--storage", url, "--out", str(folder / "model")],
                             catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    return folder, url


def test_any_labelled_table_is_searched_exported_and_predicted_by_name(wine_study):
    folder, _ = wine_study
    meta = json.loads((folder / "model" / "model.json").read_text())
    wine = load_wine(as_frame=True)
    assert meta["classes"] == ["barbera", "barolo", "grignolino"]   # its own names, sorted
    assert meta["features"] == list(wine.feature_names)            # no id, no label
    assert meta["test_accuracy"] > 0.8   # wine is easy: chance is about 0.4

    # predict reads rows by feature name: another column order, extra columns, no label
    rows = wine_frame().drop(columns=["cultivar"])
    rows = rows[["sample_id", *reversed(wine.feature_names)]].assign(note="x")
    rows.to_csv(folder / "rows.csv", index=False)
    model = ExportedModel(folder / "model", "onnx")
    predictions = list(predict_files(model, [folder / "rows.csv"], on_error=pytest.fail))
    truth = [("barolo", "grignolino", "barbera")[t] for t in wine.target]
    assert len(predictions) == len(truth)
    assert np.mean([p.genre == t for p, t in zip(predictions, truth)]) > 0.8

    # audio needs the Kaggle audio features: refused in one line that says why
    audio = folder / "tone.wav"
    sf.write(audio, np.sin(np.arange(22050 * 2) / 10).astype(np.float32), 22050)
    errors = []
    assert not list(predict_files(model, [audio], on_error=errors.append))
    assert "audio extraction does not compute" in str(errors[0]) and "\n" not in str(errors[0])


def test_a_study_refuses_other_columns_of_the_same_file(wine_study):
    from click.testing import CliRunner

    from gsearch.cli import main

    folder, url = wine_study
    again = CliRunner().invoke(main, ["run", "--data", str(folder / "wine.csv"), "--label", "cultivar",
                                      "--drop", "sample_id", "--drop", "proline", "--trials", "1",
                                      "--storage", url, *space_args(tiny)])
    assert again.exit_code == 1 and again.output.startswith("error: ")
    assert "12 feature columns" in again.output or "13 feature columns" in again.output
    assert len(again.output.strip().splitlines()) == 1


@pytest.mark.parametrize("change, options, message", [
    (lambda f: f, {}, "no 'label' column (its columns: 'sample_id', 'alcohol'"),
    (lambda f: f, {"label": "cultivar"}, "column 'sample_id' has a different value in nearly every "
                                         "row (178 values in 178 rows): an id or free text, not a "
                                         "category; leave it out with --drop sample_id"),
    (lambda f: f.assign(cultivar="barolo"), {"label": "cultivar", "drop": ("sample_id",)},
     "only 1 class (barolo) found in column 'cultivar'"),
    (lambda f: f.assign(ash=f.ash.astype(object).where(f.index != 5, "inf")),
     {"label": "cultivar", "drop": ("sample_id",)}, "column 'ash' has a NaN or infinite value 'inf' at data row 6"),
    (lambda f: f.assign(cultivar=f.cultivar.where(f.index > 2, "")),
     {"label": "cultivar", "drop": ("sample_id",), "task": "regression"},
     "column 'cultivar' has a non-numeric value 'barolo' at data row 4 (line 5)"),
    (lambda f: f, {"label": "cultivar", "drop": ("sampleid",)}, "no column 'sampleid' to leave out"),
    (lambda f: f[["sample_id", "cultivar"]], {"label": "cultivar", "drop": ("sample_id",)},
     "has no feature column"),
])
def test_a_bad_table_of_ones_own_fails_in_one_line(tmp_path, change, options, message):
    path = tmp_path / "t.csv"
    change(wine_frame()).to_csv(path, index=False)
    with pytest.raises(DataError) as error:
        load_dataset(path, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_duplicate_columns_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,a,label\n1,2,x\n3,4,y\n")
    with pytest.raises(DataError, match="column 'a' more than once"):
        load_dataset(path)


def test_a_library_sorted_by_your_own_labels(tmp_path, cli):
    """extract labels each file with its folder, whatever it is; run, export-best and predict
    on audio then work for those labels."""
    rng = np.random.default_rng(0)
    for label, freq in (("calm", 220.0), ("bright", 1760.0)):
        for i in range(6):
            t = np.arange(int(22050 * 3.5)) / 22050
            y = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) + 0.02 * rng.standard_normal(t.size)
            (tmp_path / "library" / label).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / "library" / label / f"{label}{i}.wav", y.astype(np.float32), 22050)
    table = tmp_path / "mine.csv"
    assert cli("extract", tmp_path / "library", "--out", table, "--jobs", 2).exit_code == 0
    assert sorted(set(pd.read_csv(table)["label"])) == ["bright", "calm"]
    url = f"sqlite:///{tmp_path / 's.db'}"
    ran = cli("run", "--data", table, "--trials", 2, "--storage", url, "--pruner", "none",
              "--test-size", 0.34, "--val-size", 0.25, space=tiny)
    assert ran.exit_code == 0, ran.output
    assert cli("export-best", "--storage", url, "--out", tmp_path / "model").exit_code == 0
    model = ExportedModel(tmp_path / "model", "onnx")
    assert model.classes == ("bright", "calm")
    [calm] = predict_files(model, [tmp_path / "library" / "calm" / "calm0.wav"], on_error=pytest.fail)
    assert set(calm.probabilities) == {"bright", "calm"}
