"""Breaks of the stored studies found by an attack pass (issue 35), for real, no mocks:
several runs creating one server database's tables at once."""

import multiprocessing
import uuid

import optuna
import pytest
import sqlalchemy

from gsearch.search.storage import open_storage


def names(url) -> list[str]:
    return [s.study_name for s in open_storage(url).get_all_studies()]


# -- item 17: several runs creating one server database's tables at once ---------------------

def _open_at_once(url, barrier, results):
    """A run's first steps on a fresh database: open the storage (RDBStorage creates Optuna's
    tables), create or load the study."""
    barrier.wait()
    try:
        optuna.create_study(storage=open_storage(url), study_name="s", load_if_exists=True)
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.slow
@pytest.mark.parametrize("server", ["postgres_url", "mysql_url"])
def test_three_processes_creating_one_fresh_server_database_at_once(request, server):
    """10 rounds of 3 processes released together on a fresh database each: before the lock,
    every round failed on both (MariaDB: "Table 'studies' already exists"; PostgreSQL: a
    UniqueViolation on pg_type_typname_nsp_index), with a hint about host and password."""
    base = sqlalchemy.engine.make_url(request.getfixturevalue(server))
    if base.drivername == "mysql":
        base = base.set(drivername="mysql+pymysql")
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    ctx = multiprocessing.get_context("fork")   # Optuna is imported already: 10 rounds in seconds
    failures = []
    try:
        for round_ in range(10):
            database = f"gsearch_fresh_{uuid.uuid4().hex[:12]}"
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE DATABASE {database}")
            try:
                url = base.set(database=database).render_as_string(hide_password=False)
                barrier, results = ctx.Barrier(3), ctx.Queue()
                procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results))
                         for _ in range(3)]
                for proc in procs:
                    proc.start()
                outcomes = [results.get(timeout=60) for _ in procs]
                for proc in procs:
                    proc.join(30)
                failures += [f"round {round_}: {o}" for o in outcomes if o != "ok"]
                assert names(url) == ["s"]
            finally:
                force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
                with admin.connect() as connection:
                    connection.exec_driver_sql(f"DROP DATABASE {database}{force}")
    finally:
        admin.dispose()
    assert not failures, "\n".join(failures)
