"""Every private name of Optuna that gsearch uses, each behind one function (torch's are in
gsearch/models/_compat.py).

Private names change without notice; keeping them here means one module to read when Optuna
moves, and tests/test_compat.py has one test per function that fails when Optuna changes the
name or its behaviour. setup.cfg bounds Optuna to the major version these were checked against.
"""

from __future__ import annotations

from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session


def study_storage(study):
    """The storage object behind a study handle."""
    return study._storage


def study_id(study) -> int:
    """The storage's id of a study (artifact URLs of optuna-dashboard use it)."""
    return study._study_id


def trial_id(trial) -> int:
    """The storage's id of a trial (optuna.Trial or FrozenTrial)."""
    return trial._trial_id


def distribution_contains(distribution, value) -> bool:
    """Whether `value` lies in an Optuna distribution (range, step, choices), by Optuna's
    own check."""
    return distribution._contains(distribution.to_internal_repr(value))


def take_waiting_trials_with(study, take) -> None:
    """Make `study.ask()` take an enqueued (WAITING) trial through `take()` instead of
    Optuna's own pick (Study._pop_waiting_trial_id): `take` sets the trial it chooses RUNNING
    and returns its storage id, or returns None when there is none (ask then creates one).
    This handle only; other handles on the same study keep Optuna's pick."""
    study._pop_waiting_trial_id = take


def make_grpc_server(storage, host: str, port: int):
    """Optuna's gRPC storage proxy server (what `optuna.storages.run_grpc_proxy_server`
    runs, without its blocking wait, so gsearch can stop it on a signal)."""
    from optuna.storages._grpc.server import make_server   # lazy: grpc is the [grpc] extra

    return make_server(storage, host, port)


def write_intermediate_values(storage, values: dict[int, dict[int, float]]) -> None:
    """Several trials' intermediate values, {trial id: {step: value}}, stored exactly as
    Trial.report stores them (a RUNNING trial only; a step already stored is overwritten).
    On an RDB storage they go in one transaction, where Trial.report costs one transaction
    and three queries per value (about 4 ms each on SQLite); other storages take them one
    by one through their public method."""
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if not isinstance(backend, RDBStorage):
        for trial_id_, steps in values.items():
            for step, value in steps.items():
                storage.set_trial_intermediate_value(trial_id_, step, value)
        return
    Value = models.TrialIntermediateValueModel
    with _create_scoped_session(backend.scoped_session, True) as session:
        for trial_id_, steps in values.items():
            trial = models.TrialModel.find_or_raise_by_id(trial_id_, session)
            backend.check_trial_is_updatable(trial_id_, trial.state)
            stored = {row.step: row for row in session.query(Value).filter(
                Value.trial_id == trial_id_, Value.step.in_(list(steps)))}
            for step, value in steps.items():
                number, kind = Value.intermediate_value_to_stored_repr(value)
                row = stored.get(step)
                if row is None:
                    session.add(Value(trial_id=trial_id_, step=step, intermediate_value=number,
                                      intermediate_value_type=kind))
                else:
                    row.intermediate_value, row.intermediate_value_type = number, kind
