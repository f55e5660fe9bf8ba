"""A new user's first hour with a table of their own (issue 35, items 4 and 8): comma lists,
a study of the table's own name right after the GTZAN quickstart, and predict's output."""

import json

import numpy as np
import optuna
import pandas as pd
from test_tables import penguins, tiny


def test_own_table_after_the_gtzan_quickstart_gets_its_own_study_and_comma_lists(tmp_path, cli, make_csv):
    db = f"sqlite:///{tmp_path / 's.db'}"
    gtzan = cli("run", "--data", make_csv(), "--storage", db, "--trials", 1, space=tiny)
    assert gtzan.exit_code == 0 and "study 'gtzan-mlp'" in gtzan.output, gtzan.output
    path = tmp_path / "penguins.csv"
    penguins().assign(id=lambda f: [f"p{i}" for i in range(len(f))]).to_csv(path, index=False)
    own = cli("run", "--data", path, "--label", "species", "--drop", "id,sex", "--storage", db,
              "--trials", 1, space=tiny)
    assert own.exit_code == 0, own.output
    assert "study 'penguins'" in own.output and "next: gsearch export-best --study penguins" in own.output
    study = optuna.load_study(study_name="penguins", storage=db)
    assert study.user_attrs["features"] == ["island", "bill", "flipper"]   # id and sex left out
    assert len(optuna.load_study(study_name="gtzan-mlp", storage=db).trials) == 1   # untouched


def test_export_best_and_report_take_the_storages_only_study(tmp_path, cli):
    path, db = tmp_path / "penguins.csv", f"sqlite:///{tmp_path / 's.db'}"
    penguins().to_csv(path, index=False)
    assert cli("run", "--data", path, "--label", "species", "--storage", db, "--trials", 2,
               "--pruner", "none", space=tiny).exit_code == 0
    exported = cli("export-best", "--storage", db, "--out", tmp_path / "model", "--ensemble", 1)
    assert exported.exit_code == 0, exported.output
    assert json.loads((tmp_path / "model" / "model.json").read_text())["study"] == "penguins"


def test_predict_names_file_and_row_writes_a_table_and_goes_on_past_a_bad_row(tmp_path, cli):
    path, db, out = tmp_path / "p.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    penguins().to_csv(path, index=False)
    assert cli("run", "--data", path, "--label", "species", "--storage", db, "--trials", 2,
               "--pruner", "none", "--export", out, space=tiny).exit_code == 0
    rows = penguins(6, seed=3).drop(columns=["species"])
    rows["bill"] = rows["bill"].astype(object)
    rows.loc[2, "bill"] = "long"   # text where the model reads a number: this row alone fails
    rows.to_csv(tmp_path / "new.tsv", index=False, sep="\t")   # tabs: sniffed
    result = cli("predict", "--model", out, tmp_path / "new.tsv", "--out", tmp_path / "out.csv",
                 "--sets")
    assert result.exit_code == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "column 'bill' has a non-numeric value 'long' at data row 3 (line 4)" in error
    lines = [line for line in result.stdout.splitlines() if line]
    assert [line.split(":")[0] for line in lines] == [f"new.tsv row {i}" for i in (1, 2, 4, 5, 6)]
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table["row"]) == [1, 2, 4, 5, 6] and set(table["source"]) == {str(tmp_path / "new.tsv")}
    probabilities = table[[c for c in table if c.startswith("probability_")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert all(p in s.split("|") for p, s in zip(table["prediction"], table["set"]))


def test_the_protocol_is_said_in_words_and_recorded_without_contradiction(tmp_path, cli):
    """model.json's split names one grouping (a column's, not also 'track') and says the whole
    protocol in words, as the report's summary does (issue 35, item 9); a validation split too
    small to rank trials gets a note suggesting --cv (item 10)."""
    frame = penguins(300)
    frame["colony"] = [f"c{i % 40}" for i in range(len(frame))]
    path, db, out = tmp_path / "p.csv", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    frame.to_csv(path, index=False)
    ran = cli("run", "--data", path, "--label", "species", "--group", "colony", "--storage", db,
              "--trials", 2, "--pruner", "none", "--export", out, space=tiny)
    assert ran.exit_code == 0, ran.output
    assert "note: the validation split holds" in ran.output and "--cv 5" in ran.output
    split = json.loads((out / "model.json").read_text())["split"]
    assert split["group"] == "colony" and "groups" not in split
    assert split["protocol"].startswith("rows grouped by column 'colony', no group on two sides")
    assert json.loads((out / "report.json").read_text())["split"] == split
    assert cli("report", "--storage", db, "--out", tmp_path / "r").exit_code == 0
    assert f"Protocol: {split['protocol']}." in (tmp_path / "r" / "summary.md").read_text()
