"""The storage URL classified once (storage.url.StorageURL): each kind with its file, heartbeats,
artifact folder and masked form, without loading Optuna or SQLAlchemy; the give-up on a
database server, which a worker sends to its parent, survives the pipe; gsearch's RDB
storages pickle, as Optuna's do."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from gsearch import GsearchError
from gsearch.search.storage import Kind, StorageURL, check_url

KINDS = [   # url, kind, file, heartbeats, artifact folder
    ("sqlite:///studies.db", Kind.SQLITE, "studies.db", True, "studies-artifacts"),
    ("sqlite:////abs/x.sqlite3", Kind.SQLITE, "/abs/x.sqlite3", True, "/abs/x-artifacts"),
    ("sqlite+pysqlite:///runs/a%20b.db?timeout=5", Kind.SQLITE, "runs/a b.db", True,
     "runs/a b-artifacts"),
    ("sqlite://host/x.db", Kind.SQLITE, "x.db", True, "x-artifacts"),   # SQLite ignores a host
    ("postgresql://me:pw@127.0.0.1:5432/db", Kind.SERVER, None, True, None),
    ("postgresql+psycopg://me@host/db", Kind.SERVER, None, True, None),
    ("mysql://root@127.0.0.1/test", Kind.SERVER, None, True, None),
    ("mysql+pymysql://root@127.0.0.1/test", Kind.SERVER, None, True, None),
    ("redis://:pw@127.0.0.1:6379/0", Kind.REDIS, None, False, None),
    ("rediss://host:6380/0", Kind.REDIS, None, False, None),
    ("unix:///run/redis.sock", Kind.REDIS, None, False, None),
    ("runs/studies.log", Kind.JOURNAL, "runs/studies.log", False, "runs/studies-artifacts"),
    ("grpc://proxyhost:13000", Kind.GRPC, None, False, None),
]


@pytest.mark.parametrize("url, kind, path, heartbeats, artifacts", KINDS, ids=[k[0] for k in KINDS])
def test_each_kind_of_url_is_classified(url, kind, path, heartbeats, artifacts):
    location = StorageURL.parse(url)
    assert location.kind is kind and location.url == url
    assert location.path == (None if path is None else Path(path))
    assert location.has_heartbeats is heartbeats
    assert location.artifact_dir == (None if artifacts is None else Path(artifacts))
    assert "pw" not in location.safe


def test_a_grpc_url_names_the_proxys_address_and_a_server_its_scheme():
    assert StorageURL.parse("grpc://proxyhost:13000/").address == ("proxyhost", 13000)
    assert StorageURL.parse("mysql+pymysql://root@h/test").scheme == "mysql+pymysql"
    assert StorageURL.parse("postgresql://me:s3cret@h/db").safe == "postgresql://me:***@h/db"


@pytest.mark.parametrize("url, message", [
    ("oops.db", "bad storage URL 'oops.db'; use for example sqlite:///"),
    ("sqlite:/studies.db", "bad storage URL"),
    ("postgres://me@localhost/db", "bad storage URL"),        # SQLAlchemy 2 says postgresql
    ("postgresql+psycopg3://me@localhost/db", "bad storage URL"),   # no such driver
    ("nosuchdb://x", "bad storage URL 'nosuchdb://x'"),
    ("sqlite://", "an in-memory SQLite storage keeps nothing"),
    ("sqlite:///:memory:", "an in-memory SQLite storage keeps nothing"),
    ("grpc://nohost", "use grpc://HOST:PORT of a 'gsearch serve-storage'"),
])
def test_a_url_that_names_no_storage_is_one_line(url, message):
    with pytest.raises(GsearchError) as error:
        StorageURL.parse(url)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_check_url_checks_the_files_folder_and_says_what_the_url_names(tmp_path):
    assert check_url(f"sqlite:///{tmp_path}/new.db").path == tmp_path / "new.db"
    for url in (f"sqlite:///{tmp_path}/missing/x.db", f"{tmp_path}/missing/x.log"):
        with pytest.raises(GsearchError, match="does not exist; create it"):
            check_url(url)
    with pytest.raises(GsearchError, match="no study storage at"):
        check_url(f"{tmp_path}/x.log", must_exist=True)
    assert not list(tmp_path.iterdir())   # checking creates nothing


def test_the_light_storage_modules_load_neither_optuna_nor_sqlalchemy():
    """The CLI imports gsearch.search.storage when it starts (gsearch --help) and checks a URL
    before it loads the heavy libraries: only open_storage and the resilience names load them."""
    probe = ("import sys\n"
             "import gsearch.search.storage as s\n"
             "s.check_url('sqlite:///x.db'); s.StorageURL.parse('postgresql://u@h/db')\n"
             "print(*sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))\n"
             "s.open_storage\n"
             "print(*sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.splitlines() == ["", "optuna sqlalchemy"]


def test_gsearch_help_loads_neither_optuna_nor_sqlalchemy():
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print(*sorted(m for m in ('optuna', 'sqlalchemy', 'torch')"
             " if m in sys.modules)))\n"
             "sys.argv = ['gsearch', '--help']\n"
             "from gsearch.__main__ import main\n"
             "main()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "Usage" in done.stdout, done.stderr
    assert done.stdout.splitlines()[-1] == ""


def test_the_give_up_on_a_server_survives_the_pipe_to_the_parent():
    from gsearch.search.storage import StorageLost

    lost = pickle.loads(pickle.dumps(StorageLost("lost the connection to storage x")))
    assert isinstance(lost, StorageLost) and isinstance(lost, GsearchError)
    assert str(lost) == "lost the connection to storage x"


def test_gsearchs_rdb_storages_pickle_and_are_optunas(tmp_path, postgres_url):
    import optuna

    from gsearch.search.storage import open_storage

    for url in (f"sqlite:///{tmp_path / 's.db'}", postgres_url):
        storage = open_storage(url)
        assert isinstance(storage, optuna.storages.RDBStorage)
        copy = pickle.loads(pickle.dumps(storage))
        assert type(copy) is type(storage)
        assert [s.study_name for s in copy.get_all_studies()] == \
            [s.study_name for s in storage.get_all_studies()]
        assert (copy.outage is None) == (storage.outage is None)
