"""One test per private Optuna/torch name that gsearch uses (gsearch/models/_compat.py for
torch, gsearch/search/_compat.py for Optuna): each fails when the library renames the name or
changes what gsearch relies on."""

import optuna
import pytest
import torch

from gsearch.models import _compat as torch_compat
from gsearch.search import _compat


def test_fused_adamw_step_is_torchs_adamw():
    torch.manual_seed(0)
    p = torch.randn(5, 3)
    grads = [torch.randn(5, 3) for _ in range(3)]
    reference = p.clone().requires_grad_()
    optimizer = torch.optim.AdamW([reference], lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, eps=1e-7)
    ours, exp_avg, exp_avg_sq, step = p.clone(), torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(())
    for g in grads:
        reference.grad = g.clone()
        optimizer.step()
        step += 1
        torch_compat.fused_adamw_step([ours], [g], [exp_avg], [exp_avg_sq], step, lr=0.01, beta1=0.8,
                                 beta2=0.99, weight_decay=0.1, eps=1e-7)
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-6, atol=1e-7)


def test_zero_empties_every_tensor_in_place():
    tensors = [torch.ones(3), torch.full((2, 2), 5.0)]
    ids = [t.data_ptr() for t in tensors]
    torch_compat.zero_(tensors)
    assert all(t.abs().sum() == 0 for t in tensors) and [t.data_ptr() for t in tensors] == ids


def test_study_storage_and_id_name_the_study_in_its_storage(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="c", storage=storage)
    assert _compat.study_storage(study).get_study_name_from_id(_compat.study_id(study)) == "c"


def test_trial_id_is_the_storages_id_of_live_and_frozen_trials():
    study = optuna.create_study()
    trial = study.ask()
    frozen = study.tell(trial, 1.0)
    storage = _compat.study_storage(study)
    assert storage.get_trial(_compat.trial_id(trial)).number == trial.number
    assert _compat.trial_id(frozen) == _compat.trial_id(trial)


def test_distribution_contains_checks_range_step_and_choices():
    ints = optuna.distributions.IntDistribution(30, 200, step=10)
    assert _compat.distribution_contains(ints, 40) and not _compat.distribution_contains(ints, 45)
    assert not _compat.distribution_contains(ints, 210)
    floats = optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)
    assert _compat.distribution_contains(floats, 1e-3) and not _compat.distribution_contains(floats, 0.1)
    choices = optuna.distributions.CategoricalDistribution([True, False])
    assert _compat.distribution_contains(choices, False)


def test_take_waiting_trials_with_decides_which_enqueued_trial_ask_runs():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    storage, seen = _compat.study_storage(study), []

    def take_the_last():
        waiting = storage.get_all_trials(_compat.study_id(study), states=(optuna.trial.TrialState.WAITING,))
        seen.append(len(waiting))
        if not waiting:
            return None
        storage.set_trial_state_values(_compat.trial_id(waiting[-1]), state=optuna.trial.TrialState.RUNNING)
        return _compat.trial_id(waiting[-1])

    _compat.take_waiting_trials_with(study, take_the_last)
    assert study.ask().suggest_float("x", 0, 3) == 2.0   # Optuna's own pick is the first
    assert study.ask().suggest_float("x", 0, 3) == 1.0
    study.ask()                                           # none left: a new trial
    assert seen == [2, 1, 0] and len(study.trials) == 3


def test_make_grpc_server_serves_a_storage(tmp_path):
    import socket

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    optuna.create_study(study_name="g", storage=storage)
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    server = _compat.make_grpc_server(storage, "127.0.0.1", port)
    server.start()
    try:
        proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
        proxy.wait_server_ready(timeout=10)
        assert [s.study_name for s in proxy.get_all_studies()] == ["g"]
    finally:
        server.stop(grace=None).wait(5)


def test_versions_are_the_bounded_ones():
    """setup.cfg bounds optuna and torch to the majors these names were checked on."""
    assert optuna.__version__.split(".")[0] == "5"
    assert torch.__version__.split(".")[0] == "2"


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_write_intermediate_values_stores_what_trial_report_stores(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else None
    study = optuna.create_study(storage=url)
    storage = _compat.study_storage(study)
    values = {0: 0.5, 1: float("nan"), 2: float("inf"), 3: float("-inf"), 4: 0.25}
    reported, written, other = study.ask(), study.ask(), study.ask()
    for step, value in values.items():
        reported.report(value, step)
    _compat.write_intermediate_values(storage, {_compat.trial_id(written): {0: 0.1, 1: 0.1},
                                                _compat.trial_id(other): {7: 0.75}})
    _compat.write_intermediate_values(storage, {_compat.trial_id(written): values})  # overwrites 0, 1
    stored = {t.number: t.intermediate_values for t in study.get_trials()}
    assert repr(stored[written.number]) == repr(stored[reported.number])   # nan == nan by repr
    assert stored[other.number] == {7: 0.75}
    study.tell(other, 1.0)
    with pytest.raises(RuntimeError, match="finished"):   # UpdateFinishedTrialError
        _compat.write_intermediate_values(storage, {_compat.trial_id(other): {8: 0.5}})


def test_cached_backend_is_the_storage_a_study_wraps_in_its_cache(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    held = _compat.study_storage(optuna.create_study(storage=storage))
    assert held is not storage and _compat.cached_backend(held) is storage
    memory = _compat.study_storage(optuna.create_study())   # no cache in front of it
    assert _compat.cached_backend(memory) is memory


def test_calls_from_cache_are_the_private_methods_optunas_cache_calls_on_its_storage():
    import inspect
    import re

    from optuna.storages._cached_storage import _CachedStorage

    called = set(re.findall(r"self\._backend\.(_\w+)\(", inspect.getsource(_CachedStorage)))
    # besides these, the stale-trial hook that RDBStorageHooks renames
    assert called == _compat.calls_from_cache() | {"_get_stale_trial_ids"}
    assert all(callable(getattr(optuna.storages.RDBStorage, name)) for name in called)


def _heartbeat_storage(cls, tmp_path, interval):
    import warnings

    with warnings.catch_warnings():   # heartbeats are experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=interval,
                   grace_period=interval)


def test_rdb_storage_hooks_stale_trial_ids_decides_what_optunas_heartbeat_fails(tmp_path):
    import time

    named: list[int] = []

    class Hooked(_compat.RDBStorageHooks):
        def stale_trial_ids(self, study_id):
            return super().stale_trial_ids(study_id) + named

    storage = _heartbeat_storage(Hooked, tmp_path, 1)
    study = optuna.create_study(storage=storage)
    beating, chosen = study.ask(), study.ask()
    for trial in (beating, chosen):
        storage.record_heartbeat(_compat.trial_id(trial))
    named.append(_compat.trial_id(chosen))
    optuna.storages.fail_stale_trials(study)        # through the study's cache, as Optuna's heartbeat
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {beating.number: optuna.trial.TrialState.RUNNING,
                      chosen.number: optuna.trial.TrialState.FAIL}
    named.clear()
    time.sleep(2.5)                                  # Optuna's own: a beat older than the grace
    assert storage.stale_trial_ids(_compat.study_id(study)) == [_compat.trial_id(beating)]


def _beaten_silent_finished(tmp_path):
    """A study in SQLite with a RUNNING trial that beat, one that never did, a finished one."""
    storage = _heartbeat_storage(optuna.storages.RDBStorage, tmp_path, 60)
    study = optuna.create_study(storage=storage)
    beaten, silent, finished = study.ask(), study.ask(), study.ask()
    storage.record_heartbeat(_compat.trial_id(beaten))
    study.tell(finished, 1.0)
    return storage, study, beaten, silent


def test_unbeaten_trials_are_running_trials_without_a_heartbeat_with_their_progress(tmp_path):
    storage, study, _, silent = _beaten_silent_finished(tmp_path)
    marks = _compat.unbeaten_trials(storage, _compat.study_id(study))
    assert list(marks) == [_compat.trial_id(silent)]
    seen = set(marks.values())
    for write in (lambda: silent.report(0.5, 0), lambda: silent.set_user_attr("a", 1),
                  lambda: storage.set_trial_system_attr(_compat.trial_id(silent), "s", "x")):
        write()
        mark = _compat.unbeaten_trials(storage, _compat.study_id(study))[_compat.trial_id(silent)]
        assert mark not in seen   # every write to the trial is progress
        seen.add(mark)


def test_journal_fails_trial_is_the_record_of_a_trial_ended_as_fail(tmp_path):
    import warnings

    logged: list[dict] = []

    class Recording(optuna.storages.journal.JournalFileBackend):
        def append_logs(self, logs):
            logged.extend(logs)
            super().append_logs(logs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.JournalStorage(Recording(str(tmp_path / "s.log")))
    study = optuna.create_study(storage=storage)
    failed, done = study.ask(), study.ask()
    failed.set_user_attr("a", 1)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.tell(done, 1.0)
    assert [_compat.journal_fails_trial(log) for log in logged].count(True) == 1
    [record] = [log for log in logged if _compat.journal_fails_trial(log)]
    assert record["trial_id"] == _compat.trial_id(failed)


def test_heartbeat_ages_are_the_running_trials_by_the_databases_clock(tmp_path):
    import sqlite3

    storage, study, beaten, silent = _beaten_silent_finished(tmp_path)
    ages = _compat.heartbeat_ages(storage, _compat.study_id(study))
    assert set(ages) == {_compat.trial_id(beaten), _compat.trial_id(silent)}
    assert ages[_compat.trial_id(silent)] is None and 0 <= ages[_compat.trial_id(beaten)] < 5
    with sqlite3.connect(tmp_path / "s.db") as connection:
        connection.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-2 minutes')")
    assert 115 < _compat.heartbeat_ages(storage, _compat.study_id(study))[_compat.trial_id(beaten)] < 130


def test_delete_study_rows_deletes_a_study_and_every_row_of_it(tmp_path):
    import sqlite3

    storage = _heartbeat_storage(optuna.storages.RDBStorage, tmp_path, 60)
    kept = optuna.create_study(storage=storage, study_name="kept")
    kept.tell(kept.ask(), 2.0)
    study = optuna.create_study(storage=storage, study_name="gone", directions=["maximize"] * 2)
    study.set_user_attr("u", 1)
    study.set_metric_names(["a", "b"])   # a study system attribute
    for _ in range(3):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("u", 1)
        storage.set_trial_system_attr(_compat.trial_id(trial), "s", 1)
        storage.record_heartbeat(_compat.trial_id(trial))
        study.tell(trial, [1.0, 2.0])
    study.ask()   # RUNNING
    assert _compat.delete_study_rows(storage, _compat.study_id(study)) == 4
    assert [s.study_name for s in storage.get_all_studies()] == ["kept"]
    assert _compat.delete_study_rows(storage, _compat.study_id(study)) is None
    with sqlite3.connect(tmp_path / "s.db") as connection:   # only the other study's rows
        for table in ("trials", "trial_params", "trial_values", "trial_user_attributes",
                      "trial_system_attributes", "trial_heartbeats", "study_directions",
                      "study_user_attributes", "study_system_attributes"):
            rows = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            kept_rows = {"trials": 1, "trial_values": 1, "study_directions": 1}.get(table, 0)
            assert rows == kept_rows, table
