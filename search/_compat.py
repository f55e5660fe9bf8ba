"""Every private name of Optuna that gsearch uses, each behind one function (one class:
RDBStorageHooks; torch's are in gsearch/models/_compat.py).

Private names change without notice; keeping them here means one module to read when Optuna
moves, and tests/test_compat.py has one test per function that fails when Optuna changes the
name or its behaviour. setup.cfg bounds Optuna to the major version these were checked against.
"""

from __future__ import annotations

import sqlalchemy.orm
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState


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


def cached_backend(storage):
    """The storage behind Optuna's cache: a study over an RDBStorage holds it wrapped in a
    _CachedStorage (optuna.storages.get_storage); any other storage as it is."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def calls_from_cache() -> frozenset[str]:
    """The private methods of RDBStorage that Optuna's cache in front of it calls directly,
    besides its public ones and the stale-trial hook (RDBStorageHooks.stale_trial_ids): a
    subclass that wraps every call of the storage (storage.rdb.ServerStorage) wraps these too."""
    return frozenset({"_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials"})


class RDBStorageHooks(RDBStorage):
    """Optuna's RDBStorage with the method its heartbeat calls to find stale trials
    (optuna.storages.fail_stale_trials, through the cache) under a public name that a
    subclass extends: `stale_trial_ids`."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials: RUNNING ones whose heartbeat is older than the grace period."""
        return RDBStorage._get_stale_trial_ids(self, study_id)


def unbeaten_trials(storage: RDBStorage, study_id: int) -> dict[int, tuple[int, int, int]]:
    """The RUNNING trials of a study that have no heartbeat row, by storage id, each with a
    mark of its progress that any write to the trial changes: its number of intermediate
    values, of user attributes, and the total length of its system attributes."""
    Trial = models.TrialModel
    with _create_scoped_session(storage.scoped_session) as session:
        running = (session.query(Trial)
                   .options(sqlalchemy.orm.selectinload(Trial.heartbeats),
                            sqlalchemy.orm.selectinload(Trial.intermediate_values),
                            sqlalchemy.orm.selectinload(Trial.user_attributes),
                            sqlalchemy.orm.selectinload(Trial.system_attributes))
                   .filter(Trial.state == TrialState.RUNNING)
                   .filter(Trial.study_id == study_id).all())
        return {trial.trial_id: (len(trial.intermediate_values), len(trial.user_attributes),
                                 sum(len(a.value_json or "") for a in trial.system_attributes))
                for trial in running if not trial.heartbeats}


def write_intermediate_values(storage, values: dict[int, dict[int, float]]) -> None:
    """Several trials' intermediate values, {trial id: {step: value}}, stored exactly as
    Trial.report stores them (a RUNNING trial only; a step already stored is overwritten).
    On an RDB storage they go in one transaction, where Trial.report costs one transaction
    and three queries per value (about 4 ms each on SQLite); other storages take them one
    by one through their public method."""
    backend = cached_backend(storage)
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


def journal_fails_trial(log: dict) -> bool:
    """Whether a record of Optuna's journal storage (what JournalStorage hands its backend's
    append_logs) sets a trial's state to FAIL."""
    return (log.get("op_code") == JournalOperation.SET_TRIAL_STATE_VALUES
            and log.get("state") == TrialState.FAIL)


def heartbeat_ages(storage: RDBStorage, study_id: int) -> dict[int, float | None]:
    """The RUNNING trials of a study by storage id, each with the age in seconds of its last
    heartbeat by the database's clock (as Optuna's stale-trial check reads it), or None for a
    trial without a heartbeat row."""
    Trial = models.TrialModel
    with _create_scoped_session(storage.scoped_session) as session:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        running = (session.query(Trial)
                   .options(sqlalchemy.orm.selectinload(Trial.heartbeats))
                   .filter(Trial.state == TrialState.RUNNING)
                   .filter(Trial.study_id == study_id).all())
        return {trial.trial_id: ((now - trial.heartbeats[0].heartbeat.replace(tzinfo=None))
                                 .total_seconds() if trial.heartbeats else None)
                for trial in running}


def delete_study_rows(storage: RDBStorage, study_id: int) -> int | None:
    """Delete a study and everything of it in one transaction that first locks the study's
    row, then its trials' rows: a process writing to the study meanwhile waits, then fails
    (its rows' parent is gone). Optuna's delete_study (the ORM's cascade) instead deletes
    nothing, and says nothing, when such a process adds a row while it runs. How many trials
    were deleted; None when the study was not there."""
    Trial, Study = models.TrialModel, models.StudyModel
    of_study = sqlalchemy.select(Trial.trial_id).where(Trial.study_id == study_id)
    with _create_scoped_session(storage.scoped_session) as session:
        if session.query(Study.study_id).filter(Study.study_id == study_id) \
                .with_for_update().one_or_none() is None:
            return None
        session.query(Trial.trial_id).filter(Trial.study_id == study_id).with_for_update().all()
        for model in (models.TrialParamModel, models.TrialValueModel,
                      models.TrialIntermediateValueModel, models.TrialUserAttributeModel,
                      models.TrialSystemAttributeModel, models.TrialHeartbeatModel):
            session.query(model).filter(model.trial_id.in_(of_study)) \
                .delete(synchronize_session=False)
        deleted = session.query(Trial).filter(Trial.study_id == study_id) \
            .delete(synchronize_session=False)
        for model in (models.StudyDirectionModel, models.StudyUserAttributeModel,
                      models.StudySystemAttributeModel, Study):
            session.query(model).filter(model.study_id == study_id) \
                .delete(synchronize_session=False)
        return deleted
