"""Deployment-aware search: accuracy against parameters or latency, pruning kept, limits,
the picks of export-best, and what studies/report show."""

import doctest
import json
import sqlite3

import optuna
import pytest
from click.testing import CliRunner
from conftest import space_args, synthetic_frame
from test_search import digest

from gsearch.data.load import load_dataset
from gsearch.models.config import TrialConfig
from gsearch.search import objectives, records
from gsearch.cli import main
from gsearch.search.objectives import Objectives, score_of, cost_of, curve, feasible
from gsearch.search.parallel import run_search
from gsearch.search.selection import Pick, knee, pareto_front, pick_trial

TrialState = optuna.trial.TrialState
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# Trial n trains CONFIGS[n % len]: fixed per trial, so two studies train the same trials.
# (layers, width, lr): parameters on 57 features and 4 classes, no batch norm.
CONFIGS = [(2, 64, 1e-2), (1, 8, 1e-2), (2, 48, 1e-2), (1, 12, 3e-4), (1, 32, 1e-2), (1, 16, 1e-4)]
MAX_PARAMS = 3000   # (2, 64) has 8132 and (2, 48) 5332: over the limit


def fixed_space(epochs: int):
    def space(trial: optuna.Trial) -> TrialConfig:
        layers, width, lr = CONFIGS[trial.number % len(CONFIGS)]
        return TrialConfig(n_layers=trial.suggest_int("n_layers", layers, layers),
                           width=trial.suggest_int("width", width, width),
                           lr=trial.suggest_float("lr", lr, lr),
                           dropout=trial.suggest_float("dropout", 0.0, 0.0),
                           batch_norm=trial.suggest_categorical("batch_norm", [False]),
                           batch_size=trial.suggest_categorical("batch_size", [32]),
                           epochs=trial.suggest_int("epochs", epochs, epochs))
    return space


def copy_store(folder, tmp_path) -> str:
    """A copy of the study database (the SQLite backup API: it includes the write-ahead log)."""
    with sqlite3.connect(folder / "s.db") as src, sqlite3.connect(tmp_path / "s.db") as dst:
        src.backup(dst)
    return f"sqlite:///{tmp_path / 's.db'}"


def six_epochs(trial: optuna.Trial) -> TrialConfig:
    return fixed_space(epochs=6)(trial)


def invoke(*args, space=None):
    return CliRunner().invoke(main, [str(a) for a in args] + space_args(space), catch_exceptions=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real short multi-objective run: accuracy against parameters, --max-params 3000."""
    folder = tmp_path_factory.mktemp("pareto")
    synthetic_frame().to_csv(folder / "features.csv", index=False)
    url = f"sqlite:///{folder / 's.db'}"
    result = invoke("run", "--trials", 6, "--data", folder / "features.csv", "--storage", url,
                    "--study", "mo", "--objectives", "accuracy,params", "--max-params",
                    MAX_PARAMS, "--seed", 0, "--population", 3, "--pruner", "none",  # all train out
                    space=six_epochs)
    assert result.exit_code == 0, result.output
    assert "Pareto front (maximize validation accuracy, minimize parameters)" in result.output
    front = [line for line in result.output.splitlines() if line.startswith("  trial #")]
    assert front and all(line.split("parameters ")[1].replace(",", "").isdigit() for line in front)
    return folder, url


def load(url):
    return optuna.load_study(study_name="mo", storage=url)


def test_a_run_records_objectives_values_constraints_and_curves(store):
    _, url = store
    study = load(url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["validation accuracy", "parameters"]
    assert Objectives.of(study) == Objectives(("accuracy", "params"), max_params=MAX_PARAMS)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert cost_of(t) == t.user_attrs["n_params"]
        assert t.constraints == {"max_params": t.user_attrs["n_params"] - MAX_PARAMS}
        assert feasible(t) == (t.params["width"] <= 32)
        assert not t.intermediate_values and len(t.system_attrs[records.CURVE]) == 6
        assert score_of(t) == t.system_attrs[records.CURVE][-1]


@pytest.mark.parametrize("change", [["--objectives", "accuracy,latency"], ["--max-params", 5000],
                                    ["--objectives", "accuracy"]])
def test_resuming_with_other_objectives_is_refused_and_the_store_untouched(store, change, tmp_path):
    folder, _ = store
    url = copy_store(folder, tmp_path)
    before = digest(tmp_path / "s.db")
    options = {"--objectives": "accuracy,params", "--max-params": MAX_PARAMS}
    options.update(dict(zip(change[::2], change[1::2])))
    result = invoke("run", "--trials", 1, "--data", folder / "features.csv", "--storage", url,
                    "--study", "mo", *[x for item in options.items() for x in item])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: study 'mo' optimizes --objectives "
                                                   f"accuracy,params --max-params {MAX_PARAMS}")
    assert digest(tmp_path / "s.db") == before


@pytest.mark.parametrize("objectives, expected", [
    ("params,accuracy", "accuracy first"), ("accuracy,size", "unknown objective 'size'"),
    ("accuracy,params,latency", "at most one cost")])
def test_bad_objectives_are_one_line_errors(tmp_path, objectives, expected):
    synthetic_frame().to_csv(tmp_path / "f.csv", index=False)
    result = invoke("run", "--data", tmp_path / "f.csv", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                    "--objectives", objectives)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert expected in result.output
    assert not (tmp_path / "s.db").exists()


def run_fixed(ds, directions, objectives: Objectives):
    study = optuna.create_study(directions=directions, pruner=optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=2))
    objectives.record(study)
    run_search(study, ds, trials=12, space=fixed_space(epochs=8), device="cpu", seed=3, population=4)
    return study


def test_a_multi_objective_study_prunes_exactly_as_a_single_objective_one(make_csv):
    """The same trials, the same pruner: the same trials are pruned after the same epochs,
    with the same curves; only the multi-objective study keeps them in an attribute."""
    ds = load_dataset(make_csv())
    single = run_fixed(ds, ["maximize"], Objectives())
    multi = run_fixed(ds, ["maximize", "minimize"], Objectives(("accuracy", "latency")))
    outcome = [(t.state, curve(t)) for t in single.trials]
    assert outcome == [(t.state, curve(t)) for t in multi.trials]
    pruned = [t for t in multi.trials if t.state == TrialState.PRUNED]
    assert pruned and len(pruned) < len(multi.trials)
    for s, m in zip(single.trials, multi.trials):
        assert m.user_attrs["latency_ms"] > 0 and not m.intermediate_values
        if m.state == TrialState.COMPLETE:
            assert m.values == [s.value, m.user_attrs["latency_ms"]]


def study_of(*points):
    """A study of completed trials numbered in order: (accuracy, cost[, amount over a limit])."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, cost, *over in points:
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, cost], system_attrs={"constraints:max_params": over[0] if over else 0.0}))
    return study


def test_knee_is_the_point_farthest_above_the_line_between_the_extremes():
    # log10 cost normalized 0, 1/3, 2/3, 1; accuracy normalized 0, .91, .97, 1: the knee is #1
    trials = study_of((0.50, 10), (0.80, 100), (0.82, 1000), (0.83, 10000), (0.79, 500)).trials
    front = pareto_front(trials)
    assert [t.number for t in front] == [0, 1, 2, 3]
    assert knee(front).number == 1
    assert knee(front[:2]).number == 1   # no point above the line: the most accurate


def test_rules_never_pick_an_infeasible_trial():
    study = study_of((0.95, 50, 10.0), (0.85, 40), (0.80, 10), (0.60, 5))
    assert pick_trial(study, Pick("accuracy")).number == 1
    assert pick_trial(study, Pick("smallest-within", within=0.05)).number == 2
    assert pick_trial(study, Pick("smallest-within", within=0.0)).number == 1
    assert pick_trial(study, Pick("knee")).number == 2
    chosen = Pick("trial", number=0)
    assert pick_trial(study, chosen).number == 0 and "over the study's limits" in chosen.notes[0]


def test_each_pick_rule_exports_one_model_with_its_size_latency_and_rule(store, tmp_path):
    _, url = store
    study = load(url)
    ok = [t for t in study.trials if feasible(t)]
    best = max(map(score_of, ok))
    expected = {
        "accuracy": min(ok, key=lambda t: (-score_of(t), cost_of(t))),
        "smallest-within 0.99": min(ok, key=cost_of),   # the 8-wide trial
        "knee": knee(pareto_front(ok)),
        "smallest-within 0.01": min((t for t in ok if score_of(t) >= best - 0.01), key=cost_of),
    }
    assert expected["smallest-within 0.99"].params["width"] == 8
    for rule, trial in expected.items():
        out = tmp_path / rule.replace(" ", "_")
        result = invoke("export-best", "--storage", url, "--study", "mo", "--out", out,
                        "--pick", *rule.split())
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "model.json").read_text())
        assert meta["trial_number"] == trial.number and meta["pick"] == rule
        assert meta["n_params"] == trial.user_attrs["n_params"] <= MAX_PARAMS
        assert meta["within_limits"] is True and meta["objectives"] == ["accuracy", "params"]
        assert 0 < meta["latency_ms"] < 50
    assert expected["knee"].number in {t.number for t in pareto_front(ok)}
    over = next(t for t in study.trials if not feasible(t))   # --trial N may name any trial
    result = invoke("export-best", "--storage", url, "--study", "mo", "--out", tmp_path / "n",
                    "--trial", over.number)
    assert result.exit_code == 0 and "over the study's limits" in result.output, result.output
    meta = json.loads((tmp_path / "n" / "model.json").read_text())
    assert (meta["trial_number"], meta["pick"], meta["within_limits"]) == (
        over.number, f"trial {over.number}", False)


def test_a_latency_limit_under_nsga2_marks_trials_infeasible_and_no_rule_picks_them(tmp_path):
    """A real short run: accuracy against latency, NSGA-II, a limit no model can meet."""
    synthetic_frame().to_csv(tmp_path / "f.csv", index=False)
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = invoke("run", "--trials", 3, "--data", tmp_path / "f.csv", "--storage", url,
                    "--study", "mo", "--objectives", "accuracy,latency", "--sampler", "nsga2",
                    "--max-latency-ms", 1e-6, "--seed", 0, "--fix", "epochs=30", "--fix",
                    "n_layers=1", "--pruner", "none")
    assert result.exit_code == 0, result.output
    study = load(url)
    assert study.metric_names == ["validation accuracy", "latency ms"]
    for t in study.trials:   # NSGA-II records each trial's generation
        assert t.system_attrs["NSGAIISampler:generation"] == 0
        assert t.state == TrialState.COMPLETE and t.values[1] == t.user_attrs["latency_ms"] > 0
        assert t.constraints == {"max_latency": pytest.approx(t.values[1] - 1e-6)}
        assert not feasible(t)
    result = invoke("export-best", "--storage", url, "--study", "mo", "--out", tmp_path / "e")
    assert result.exit_code == 1 and "no completed trial within its limits" in result.output
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("args, expected", [
    (["--ensemble", 3], "exports one model"),
    (["--pick", "middle"], "unknown --pick"),
    (["--pick", "smallest-within", "lots"], "needs an accuracy margin"),
    (["--pick", "knee", "--trial", 1], "pass one of them"),
    (["--trial", 99], "trial 99 of study 'mo' does not exist")])
def test_bad_export_choices_are_one_line_errors(store, tmp_path, args, expected):
    _, url = store
    result = invoke("export-best", "--storage", url, "--study", "mo", "--out", tmp_path / "x", *args)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert expected in result.output and not (tmp_path / "x").exists()


def test_single_objective_studies_refuse_cost_rules():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5))
    for rule in ("knee", "smallest-within"):
        with pytest.raises(Exception, match="needs a multi-objective study"):
            pick_trial(study, Pick(rule))
    assert pick_trial(study, Pick("accuracy")).number == 0


def test_studies_shows_pareto_trials_and_report_draws_the_front(store, tmp_path):
    folder, _ = store
    url = copy_store(folder, tmp_path)
    single = optuna.create_study(study_name="single", storage=url, direction="maximize")
    single.add_trial(optuna.trial.create_trial(value=0.5))
    result = invoke("studies", "--storage", url)
    assert result.output.splitlines()[0].split()[-2:] == ["pareto", "best"]
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    ok = [t for t in load(url).trials if feasible(t)]
    assert rows["mo"][-2] == str(len(pareto_front(ok))) and rows["single"][-2] == "-"
    assert float(rows["mo"][-1]) == pytest.approx(max(map(score_of, ok)), abs=1e-4)

    result = invoke("report", "--storage", url, "--study", "mo", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "pareto_front.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "intermediate_values.png").exists()   # curves from the attribute
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"Pareto front (maximize validation accuracy, minimize parameters; parameters at most " \
           f"{MAX_PARAMS}): {len(pareto_front(ok))} trials" in summary
    assert "pareto_front.png" in summary


def test_docstring_examples_run():
    result = doctest.testmod(objectives)
    assert result.attempted > 0 and result.failed == 0, result
