"""The one ask/tell loop over populations: `gsearch run`, folds, pruning, divergence, Ctrl-C."""

import math

import numpy as np
import optuna
import pytest
import torch

from gsearch.data.load import load_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.population import Populations, train
from gsearch.search.parallel import run_search
from gsearch.search.protocol import Protocol

TrialState = optuna.trial.TrialState
# What the loop records on every trial that trained (search/loop.py).
ATTRS = {"seed", "device", "n_params", "train_seconds", "epochs_run", "train_loss"}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def small_space(trial: optuna.Trial) -> TrialConfig:
    """The real space's kinds of parameters, scaled down so a test trains in a blink."""
    return TrialConfig(n_layers=trial.suggest_int("n_layers", 1, 3),
                       width=trial.suggest_int("width", 8, 64, log=True),
                       dropout=trial.suggest_float("dropout", 0.0, 0.5),
                       batch_norm=trial.suggest_categorical("batch_norm", [True, False]),
                       lr=trial.suggest_float("lr", 1e-3, 3e-2, log=True),
                       batch_size=trial.suggest_categorical("batch_size", [16, 32]),
                       epochs=trial.suggest_int("epochs", 3, 8))


@pytest.fixture
def ds(make_csv):
    return load_dataset(make_csv())


def in_memory_study(pruner=None) -> optuna.Study:
    return optuna.create_study(direction="maximize", pruner=pruner or optuna.pruners.NopPruner(),
                               sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))


def test_gsearch_run_asks_and_tells_populations_and_resumes(cli, make_csv, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--data", make_csv(), "--storage", storage, "--seed", 1]
    result = cli("run", "--trials", 4, "--population", 3, "--study", "pop", *args, space=small_space)
    assert result.exit_code == 0, result.output
    assert "4 trials" in result.output
    first = optuna.load_study(study_name="pop", storage=storage).trials
    assert cli("run", "--trials", 2, "--population", 3, "--study", "pop", *args,
               space=small_space).exit_code == 0
    trials = optuna.load_study(study_name="pop", storage=storage).trials
    assert [t.number for t in trials] == list(range(6))
    assert [t.params for t in trials[:4]] == [t.params for t in first]
    assert {t.state for t in trials} == {TrialState.COMPLETE}   # no pruner fires on 3-8 epochs
    for t in trials:
        assert ATTRS <= set(t.user_attrs) and t.user_attrs["device"] == "cpu"
        assert t.user_attrs["seed"] == 1 + t.number
        assert sorted(t.intermediate_values) == list(range(t.params["epochs"])) == \
            list(range(t.user_attrs["epochs_run"]))
        assert t.value == t.intermediate_values[t.params["epochs"] - 1]
    assert max(t.value for t in trials) > 0.5   # 4 classes: chance is 0.25

    # A population of one is the same loop: the same attributes.
    assert cli("run", "--trials", 1, "--population", 1, "--study", "seq", *args,
               space=small_space).exit_code == 0
    (seq,) = optuna.load_study(study_name="seq", storage=storage).trials
    assert set(seq.user_attrs) == set(trials[0].user_attrs)


def test_folds_train_in_lockstep_and_the_value_is_their_mean(ds):
    """cv=2: both folds are members; without sampling noise (full batch, no dropout, no
    batch norm) each fold's run is exactly train()'s, so the reported curve is the mean
    of two train() curves."""
    def space(trial):
        return TrialConfig(n_layers=trial.suggest_int("n_layers", 1, 2), width=24, dropout=0.0,
                           batch_norm=False, lr=1e-2, batch_size=4096,
                           epochs=trial.suggest_int("epochs", 3, 6))

    study = in_memory_study()
    study.set_user_attr("cv", 2)   # the protocol a study records
    run_search(study, ds, trials=3, space=space, device=torch.device("cpu"), seed=5, population=3)
    folds = Protocol.of(study).trial_data(ds)  # the study's folds
    assert len(folds) == 2
    for t in study.trials:
        config = space(optuna.trial.FixedTrial(t.params))
        curves = [train(config, fold, seed=5 + t.number)[1].val_accuracy for fold in folds]
        expected = np.mean(curves, axis=0)
        curve = [t.intermediate_values[e] for e in range(config.epochs)]
        np.testing.assert_allclose(curve, expected, atol=1e-6)
        assert t.value == pytest.approx(expected[-1])


def test_each_trial_is_pruned_on_its_own_curve(ds):
    study = in_memory_study(optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=2))
    run_search(study, ds, trials=4, space=small_space, device=torch.device("cpu"), population=4)
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        assert len(t.intermediate_values) == 3 == t.user_attrs["epochs_run"]
        assert "pruner stopped it after epoch 3" in t.user_attrs["pruned_reason"]


def test_a_diverging_trial_is_pruned_and_its_population_goes_on(ds):
    def space(trial):
        lr = 1e15 if trial.number % 2 == 0 else 1e-2
        return TrialConfig(n_layers=3, width=32, batch_norm=False, dropout=0.0, lr=lr, weight_decay=0,
                           epochs=5 + trial.suggest_int("k", 0, 0))

    study = in_memory_study()
    run_search(study, ds, trials=4, space=space, device=torch.device("cpu"), population=4)
    states = [t.state for t in study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE] * 2
    assert "training loss became nan" in study.trials[0].user_attrs["pruned_reason"]
    assert study.trials[1].user_attrs["epochs_run"] == 5


def test_interrupt_leaves_no_running_trial_and_the_study_resumes(ds, monkeypatch):
    from gsearch.models.population import Population

    run_epoch, calls = Population.run_epoch, []

    def interrupted(self, until=math.inf):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return run_epoch(self, until)

    monkeypatch.setattr(Population, "run_epoch", interrupted)
    study = in_memory_study()
    with pytest.raises(KeyboardInterrupt):
        run_search(study, ds, trials=5, space=small_space, device=torch.device("cpu"), population=3)
    assert study.trials and all(t.state == TrialState.FAIL for t in study.trials)
    run_search(study, ds, trials=2, space=small_space, device=torch.device("cpu"), population=3)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2
    assert TrialState.RUNNING not in [t.state for t in study.trials]


def test_pruning_decisions_are_should_prunes(ds, monkeypatch):
    """The pruner is shown a local copy of the study (no storage read per trial and
    epoch); in one process it must decide exactly as it would on the storage."""
    monkeypatch.setattr("gsearch.search.loop._FLUSH_SECONDS", 0.0)   # the storage written every round
    median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    decisions = []

    class Checked(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            decision = median.prune(study, trial)
            stored = real.get_trials(deepcopy=False)[trial.number]
            assert stored.intermediate_values == trial.intermediate_values
            assert median.prune(real, stored) == decision
            decisions.append(decision)
            return decision

    real = in_memory_study(Checked())
    run_search(real, ds, trials=10, space=small_space, device=torch.device("cpu"), population=4)
    assert True in decisions and False in decisions


def test_successive_halving_sees_its_rungs(ds):
    study = in_memory_study(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    run_search(study, ds, trials=8, space=small_space, device=torch.device("cpu"), population=4)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all("completed_rung_0" in t.system_attrs for t in study.trials)
    survivors = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all("completed_rung_1" in t.system_attrs for t in survivors if t.params["epochs"] > 2)


def test_a_cv_study_reports_the_same_quantity_whatever_the_population(cli, make_csv, tmp_path):
    """Under --cv 3 every trial reports the mean over its folds after each epoch, whether
    it ran in a population of 3 or of 1, so a study resumed with another --population
    hands the pruner curves of one kind: each trial's last report is its value (the mean
    of its fold accuracies)."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--data", make_csv(), "--storage", storage, "--study", "cv", "--cv", 3, "--seed", 2,
            "--pruner", "none"]
    assert cli("run", "--trials", 2, "--population", 3, *args, space=small_space).exit_code == 0
    assert cli("run", "--trials", 2, "--population", 1, *args, space=small_space).exit_code == 0
    trials = optuna.load_study(study_name="cv", storage=storage).trials
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.COMPLETE}
    for t in trials:
        folds = t.user_attrs["fold_accuracies"]
        assert len(folds) == 3 and len(set(folds)) > 1 or folds[0] != 0
        last = t.intermediate_values[max(t.intermediate_values)]
        assert last == pytest.approx(np.mean(folds), abs=1e-5) == pytest.approx(t.value, abs=1e-5)


def test_timeout_is_a_deadline_for_the_trials_in_flight(ds):
    """Trials still training at the deadline stop after their current epoch: pruned with the
    reason, their curves kept; no trial starts after it."""
    def long(trial):
        return TrialConfig(n_layers=1, width=8, dropout=0.0, batch_size=32,
                           epochs=trial.suggest_int("epochs", 5000, 5000))

    study = in_memory_study()
    run_search(study, ds, trials=50, space=long, device=torch.device("cpu"), population=2,
               timeout=0.5)
    assert len(study.trials) == 2   # the first population; none started after the deadline
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["pruned_reason"].startswith("deadline")
        assert 0 < len(t.intermediate_values) == t.user_attrs["epochs_run"] < 5000


def test_a_running_trials_curve_reaches_the_storage_while_it_trains(ds, tmp_path, monkeypatch):
    """Values are stored in batches (search/loop.py _FLUSH_SECONDS), not only when a trial ends."""
    monkeypatch.setattr("gsearch.search.loop._FLUSH_SECONDS", 0.0)   # a write every round
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    seen = []   # stored curve lengths of the running trials, before each of the loop's epochs
    run_epoch = Populations.run_epoch

    def look(self, until=math.inf):
        seen.extend(len(t.intermediate_values) for t in study.get_trials(states=(TrialState.RUNNING,)))
        return run_epoch(self, until)

    monkeypatch.setattr(Populations, "run_epoch", look)
    run_search(study, ds, trials=2, device=torch.device("cpu"), population=2,
               space=lambda trial: TrialConfig(n_layers=1, width=8, epochs=trial.suggest_int("epochs", 40, 40)))
    assert [len(t.intermediate_values) for t in study.trials] == [40, 40]
    assert set(seen) >= {1, 2, 39}   # growing epoch by epoch before each trial ended
