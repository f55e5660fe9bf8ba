"""Real tables as users bring them (issue 33): text columns, empty cells, a rare class scored by
balanced accuracy, a numeric target; searched, exported and predicted from the raw rows."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes

from gsearch.data.encode import encoded, encoding_of, recode
from gsearch.data.load import DataError, load_dataset
from gsearch.models.mlp import Preprocess
from gsearch.models.predict import ExportedModel, predict_csv


def tiny(trial):
    from gsearch.models.config import TrialConfig

    return TrialConfig(n_layers=trial.suggest_int("n_layers", 0, 1), width=16, dropout=0.0,
                       lr=trial.suggest_float("lr", 3e-3, 3e-2, log=True), batch_size=32, epochs=6,
                       class_weight=trial.suggest_categorical("class_weight", ["none", "balanced"]))


def regression_space(trial):
    from gsearch.models.config import TrialConfig

    return TrialConfig(n_layers=1, width=32, dropout=0.0, lr=trial.suggest_float("lr", 3e-3, 1e-2),
                       batch_size=32, epochs=8, loss=trial.suggest_categorical("loss", ["mse", "huber"]))


def penguins(n=400, seed=0, rare=False) -> pd.DataFrame:
    """A table like Palmer penguins: two text columns (one with empty cells), numbers with
    empty cells, a species that depends on all of them; with `rare`, a 6% class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"island": rng.choice(["Biscoe", "Dream", "Torgersen"], n),
                          "sex": rng.choice(["male", "female", ""], n, p=[0.47, 0.47, 0.06]),
                          "bill": rng.normal(44, 5, n).round(1), "flipper": rng.normal(200, 14, n).round()})
    frame.loc[rng.choice(n, min(15, n // 3), replace=False), "bill"] = np.nan
    score = ((frame.island == "Dream") * 1.5 + (frame.sex == "male") * 0.8
             + np.nan_to_num(frame.bill - 44) / 5 + rng.normal(0, 0.4, n))
    frame["species"] = np.where(score > 1.3, "Chinstrap", np.where(score > 0.2, "Gentoo", "Adelie"))
    if rare:
        frame.loc[score > np.quantile(score, 0.94), "species"] = "Emperor"
    return frame


def test_the_encoding_in_numpy_and_in_the_exported_module_agree(tmp_path):
    path = tmp_path / "p.csv"
    penguins().to_csv(path, index=False)
    ds = load_dataset(path, label="species")
    assert ds.kinds == ("categorical", "categorical", "numeric", "numeric")
    assert ds.vocabulary["island"] == ("Biscoe", "Dream", "Torgersen")
    assert np.isnan(ds.X[:, 1]).sum() > 0 and np.isnan(ds.X[:, 2]).sum() == 15
    rows = np.arange(300)
    encoding = encoding_of(ds, rows)
    assert encoding.indicators == (False, False, True, False)   # bill had gaps in these rows
    assert encoding.medians[2] == pytest.approx(float(np.nanmedian(ds.X[rows, 2])))
    raw = recode(encoding, ds.X, ds.vocabulary)
    raw[0, 0] = 7.0   # a slot past the known ones: the "other" slot
    ours = encoding.encode(raw)
    theirs = Preprocess(encoding)(torch.from_numpy(raw)).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[1] == encoding.width == (3 + 2) + (2 + 2) + 2 + 1
    assert not np.isnan(ours).any()
    np.testing.assert_array_equal(encoded(ds, encoding, rows[1:]), ours[1:300])


def test_a_table_with_text_gaps_and_a_rare_class_is_searched_exported_and_predicted(tmp_path, cli):
    path, db, out = tmp_path / "p.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    frame = penguins(rare=True)
    frame.loc[[5, 17], "species"] = ""   # rows without a label: left out, counted
    frame.to_csv(path, index=False)
    ran = cli("run", "--data", path, "--label", "species", "--storage", db, "--trials", 4,
              "--metric", "balanced_accuracy", "--pruner", "none", "--export", out, space=tiny)
    assert ran.exit_code == 0, ran.output
    assert ("table: classification (label 'species': 4 classes, auto), 2 categorical feature(s): "
            "island, sex") in ran.output and "2 row(s) without a label left out" in ran.output
    assert "maximize validation balanced accuracy" in ran.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == "gsearch-table-ensemble/1" and meta["task"] == "classification"
    assert meta["metric"] == "balanced_accuracy" and meta["preprocessing"]["kinds"][:2] == ["categorical"] * 2
    assert set(meta["test_scores"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "log_loss"}
    study = optuna.load_study(study_name="p", storage=db)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["kinds"] == ["categorical", "categorical", "numeric", "numeric"]

    # predict takes the raw rows: unknown and empty categories, empty numbers, any column order
    new = pd.DataFrame({"flipper": [210, 190, 200], "bill": [50.0, np.nan, 41.0],
                        "sex": ["male", "", "female"], "island": ["Dream", "Atlantis", ""]})
    new.to_csv(tmp_path / "new.csv", index=False)
    both = [predict_csv(ExportedModel(out, backend), tmp_path / "new.csv") for backend in ("onnx", "torch")]
    for onnx_row, torch_row in zip(*both):
        assert list(onnx_row.probabilities) == list(torch_row.probabilities)
        np.testing.assert_allclose(list(onnx_row.probabilities.values()),
                                   list(torch_row.probabilities.values()), atol=1e-5)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in both[0])

    # a number where a model reads a number: refused naming the column
    bad = new.assign(bill=["fifty", 1.0, 2.0])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    result = cli("predict", "--model", out, tmp_path / "bad.csv")
    assert result.exit_code == 1 and "column 'bill' has a non-numeric value 'fifty'" in result.output


def test_a_numeric_target_is_a_regression_exported_with_rmse_mae_and_r2(tmp_path, cli):
    frame = load_diabetes(as_frame=True).frame
    path, db, out = tmp_path / "d.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    frame.to_csv(path, index=False)
    ran = cli("run", "--data", path, "--label", "target", "--storage", db, "--trials", 3,
              "--pruner", "none", "--export", out, space=regression_space)
    assert ran.exit_code == 0, ran.output
    assert "table: regression (label 'target': numbers, auto)" in ran.output
    assert "minimize validation RMSE" in ran.output and "test RMSE" in ran.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "regression" and meta["classes"] == [] and meta["metric"] == "rmse"
    assert set(meta["test_scores"]) == {"rmse", "mae", "r2"}
    assert (out / "predicted_vs_actual.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert len(report["test"]["actual"]) == len(report["test"]["predicted"]) == meta["n_test"]

    frame.drop(columns=["target"]).head(5).to_csv(tmp_path / "rows.csv", index=False)
    values = [p.value for p in predict_csv(ExportedModel(out, "onnx"), tmp_path / "rows.csv")]
    torch_values = [p.value for p in predict_csv(ExportedModel(out, "torch"), tmp_path / "rows.csv")]
    np.testing.assert_allclose(values, torch_values, rtol=1e-4)
    assert all(25 < v < 346 for v in values)   # inside the target's range
    result = cli("predict", "--model", out, tmp_path / "rows.csv", "--json")
    assert result.exit_code == 0 and json.loads(result.output)[0]["value"] == pytest.approx(values[0], rel=1e-5)


@pytest.mark.parametrize("change, options, words", [
    (lambda f: f.assign(tag=[f"id{i}" for i in range(len(f))]), {},
     "column 'tag' has a different value in nearly every row"),
    (lambda f: f.assign(code=np.arange(len(f)) % 250), {"categorical": ("code",)},
     "column 'code' has a different value in nearly every row"),
    (lambda f: f.assign(species=f.bill.fillna(1.0).astype(object).where(f.index != 3, "inf")),
     {"task": "regression"}, "column 'species' has a NaN or infinite value 'inf' at data row 4"),
    (lambda f: f, {"task": "regression"}, "column 'species' has a non-numeric value"),
    (lambda f: f, {"categorical": ("nosuch",)}, "no feature column 'nosuch' to read as categories"),
])
def test_a_bad_table_is_one_line(tmp_path, change, options, words):
    path = tmp_path / "t.csv"
    change(penguins()).to_csv(path, index=False)
    with pytest.raises(DataError) as error:
        load_dataset(path, label="species", **options)
    assert words in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("args, words", [
    (("--metric", "roc_auc"), "--metric roc_auc needs 2 classes, the label has 3"),
    (("--metric", "rmse"), "--metric rmse scores a regression"),
    (("--task", "regression", "--metric", "accuracy"), "--metric accuracy scores a classification, --task is regression"),
])
def test_a_metric_that_does_not_fit_the_table_is_one_line_before_any_store(tmp_path, cli, args, words):
    path, db = tmp_path / "p.csv", tmp_path / "s.db"
    penguins().to_csv(path, index=False)
    result = cli("run", "--data", path, "--label", "species", "--storage", f"sqlite:///{db}", *args)
    assert result.exit_code == 1 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not db.exists()


def test_a_categorical_column_of_200000_values_is_refused(tmp_path):
    n = 400_000
    frame = pd.DataFrame({"city": [f"c{i % 200_000}" for i in range(n)], "x": np.arange(n) % 7,
                          "y": np.where(np.arange(n) % 3 == 0, "a", "b")})
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'city' has 200,000 distinct values, more than the 10,000"):
        load_dataset(path, label="y")


def test_conformal_sets_and_intervals_cover_what_they_promise_on_exchangeable_rows():
    """Split conformal: on rows exchangeable with the calibration rows, a 90% set or interval
    holds the truth at least 90% of the time (up to sampling noise on 4,000 test rows)."""
    from gsearch.models.calibration import classifier_calibration, regression_calibration

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 6000)
    logits = 1.5 * np.eye(4)[y] + rng.normal(0, 1.0, (6000, 4))   # a weak classifier
    c = classifier_calibration(logits[None, :2000] * 3, y[:2000], logits[None, 2000:] * 3, y[2000:], 0.9)
    assert 0.89 <= c.coverage <= 0.93 and 1 < c.size < 4
    assert c.temperature > 2 and c.ece_after < c.ece_before   # overconfident by 3x: T near 3
    truth = rng.normal(size=6000)
    guess = truth + rng.normal(0, 0.5, 6000)
    r = regression_calibration(guess[:2000], truth[:2000], guess[2000:], truth[2000:], 0.8)
    assert 0.78 <= r.coverage <= 0.82 and r.size == pytest.approx(2 * 1.2816 * 0.5, rel=0.1)


def test_an_export_is_calibrated_and_predict_gives_its_sets_and_intervals(tmp_path, cli):
    path, db, out = tmp_path / "p.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    penguins().to_csv(path, index=False)
    ran = cli("run", "--data", path, "--label", "species", "--storage", db, "--trials", 3,
              "--pruner", "none", "--export", out, "--level", 0.8, space=tiny)
    assert ran.exit_code == 0, ran.output
    assert "calibrated on" in ran.output and "80% sets hold" in ran.output
    meta = json.loads((out / "model.json").read_text())
    calibration = meta["calibration"]
    assert calibration["level"] == 0.8 and calibration["calibration_rows"] > 0
    assert 0 < calibration["threshold"] < 1 and 0 <= calibration["coverage"] <= 1
    new = penguins(5, seed=7).drop(columns=["species"])
    new.to_csv(tmp_path / "new.csv", index=False)
    result = cli("predict", "--model", out, tmp_path / "new.csv", "--sets", "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.output)
    assert all(a["genre"] == a["set"][0] and set(a["set"]) <= set(a["probabilities"]) for a in answers)
    model = ExportedModel(out, "onnx")
    X = model.matrix({c: list(new[c]) for c in new.columns})
    for p, s in zip(model.predict_proba(X), model.predict_sets(X)):
        kept = {model.classes[i] for i in np.flatnonzero(p >= calibration["threshold"])}
        assert set(s) == (kept or {model.classes[int(p.argmax())]})


def test_the_quantile_transform_trains_exports_and_agrees_between_backends(tmp_path):
    from gsearch.models.config import TrialConfig
    from gsearch.models.export import save_model
    from gsearch.models.manifest import ExportManifest
    from gsearch.models.mlp import Quantile, fit_quantiles, quantile_transform
    from gsearch.models.population import TrainData, train

    rng = np.random.default_rng(0)
    X = np.exp(rng.normal(size=(400, 3))).astype(np.float32)   # skewed inputs
    X[:, 2] = 1.0   # a constant column
    x, y = fit_quantiles(X)
    assert (np.diff(x, axis=1) > 0).all()
    probe = np.concatenate([X[:50], X[:5] * 100, -X[:5]])   # beyond both ends too
    np.testing.assert_allclose(Quantile(x, y)(torch.from_numpy(probe)).numpy(),
                               quantile_transform(probe, x, y), atol=1e-4)   # float32 sums
    quantile = Quantile(x, y)   # by binary search in torch, summed over segments in ONNX
    np.testing.assert_allclose(quantile(torch.from_numpy(probe)).numpy(),
                               quantile.summed(torch.from_numpy(probe)).numpy(), atol=1e-5)
    config = TrialConfig(n_layers=1, width=8, epochs=3, input_transform="quantile")
    model, _ = train(config, TrainData(X, (X[:, 0] > 1).astype(np.int64), 2))
    save_model(model, ExportManifest(("no", "yes"), ("a", "b", "c"), (config,)), tmp_path / "m")
    onnx, torch_ = ExportedModel(tmp_path / "m", "onnx"), ExportedModel(tmp_path / "m", "torch")
    np.testing.assert_allclose(onnx.predict_proba(probe), torch_.predict_proba(probe), atol=1e-5)
    assert torch_.config.input_transform == "quantile"


def test_an_export_that_would_retrain_too_long_keeps_fewer_members_and_calibrates_on_its_holdout(
        tmp_path, cli, monkeypatch):
    """A big table: the default ensemble shrinks to what the export's time allows, and the
    members train on the training rows alone and are calibrated on the validation rows (here
    forced by an export budget of 0 s)."""
    import gsearch.search.export as export

    path, db, out = tmp_path / "p.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    penguins().to_csv(path, index=False)
    assert cli("run", "--data", path, "--label", "species", "--storage", db, "--trials", 3,
               "--pruner", "none", space=tiny).exit_code == 0
    monkeypatch.setattr(export, "EXPORT_SECONDS", 0.0)
    result = cli("export-best", "--storage", db, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    ds = load_dataset(path, label="species")
    from gsearch.search.protocol import Protocol

    split = Protocol().split(ds)
    assert "members" not in meta and meta["pick"] == "accuracy"   # one trial, not the top 5
    assert meta["retrained_on_rows"] == len(split.train)
    assert meta["calibration"]["calibration_rows"] == len(split.val)


def test_big_tables_go_through_an_exported_network_in_bounded_chunks():
    """The quantile transform of an exported network holds rows x inputs x 32 values three
    times over: a million test rows at once took 11.6 GB. Rows go through ROWS_AT_ONCE at a
    time, and the answer is the whole one."""
    from gsearch.models.predict import ROWS_AT_ONCE, by_rows

    X = np.random.default_rng(0).normal(size=(2 * ROWS_AT_ONCE + 5, 3)).astype(np.float32)
    sizes = []

    def outputs(part):
        sizes.append(len(part))
        return part * 2

    assert np.array_equal(by_rows(outputs, X), X * 2)
    assert max(sizes) == ROWS_AT_ONCE and sum(sizes) == len(X) and len(sizes) == 3


def test_quantile_knots_of_a_big_table_come_from_a_sample_as_good_as_all_rows():
    from gsearch.models.mlp import QUANTILE_KNOTS, QUANTILE_SAMPLE, fit_quantiles

    X = np.random.default_rng(1).exponential(size=(3 * QUANTILE_SAMPLE, 2)).astype(np.float32)
    x, _ = fit_quantiles(X)
    levels = np.linspace(0.5 / QUANTILE_KNOTS, 1 - 0.5 / QUANTILE_KNOTS, QUANTILE_KNOTS)
    exact = np.quantile(X.astype(np.float64), levels, axis=0).T
    assert (np.abs(x - exact) / (1 + np.abs(exact))).max() < 0.01   # each knot within 1 %
    assert np.array_equal(fit_quantiles(X)[0], x)   # the sample is seeded: the same knots
