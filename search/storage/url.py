"""A storage URL, classified once (`StorageURL`): which storage it names, its file, whether its
trials beat a heartbeat, where its artifacts go, its form with the password masked; and
`check_url`, every check of a URL that needs neither Optuna, SQLAlchemy nor a server.

Standard library only: the CLI checks --storage when it starts, in milliseconds, before it
imports torch and Optuna (about a second), and `gsearch --help` reads the constants here.
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from gsearch import GsearchError

DEFAULT_STORAGE = "sqlite:///studies.db"
STORAGE_ENV = "GSEARCH_STORAGE"  # --storage's default when set, as OPTUNA_STORAGE for Optuna's CLI
MAX_STUDY_NAME = 512  # characters: Optuna's study_name column (VARCHAR(512) in its RDB models)


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def storage_identity(url: str | None) -> str | None:
    """The storage an export records as its study's (model.json's `storage`, models.folder):
    the URL with any password masked, a SQLite or journal file by its absolute path (so that
    sqlite:///studies.db names one file from any folder). None: a study in memory.

    >>> storage_identity("postgresql://me:secret@db/gsearch")
    'postgresql://me:***@db/gsearch'
    """
    if url is None:
        return None
    try:
        location = StorageURL.parse(url)
    except GsearchError:
        return safe_url(url)
    if location.path is None:
        return location.safe
    path = os.path.abspath(location.path)
    return path if location.kind is Kind.JOURNAL else f"sqlite:///{path}"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a driver's may run to many), or its type."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def causes(error: BaseException | None, most: int = 8):
    """An error and the errors behind it, innermost last (Optuna wraps SQLAlchemy's errors,
    which wrap the driver's)."""
    while error is not None and most:
        yield error
        error, most = error.__cause__ or error.__context__, most - 1


class StorageError(GsearchError):
    """A storage URL that is malformed, names no usable storage, or cannot be reached; `url`
    is the URL as given (the CLI says where it came from, e.g. the environment variable)."""

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.url = url


def about_url(function):
    """Errors of function(url, ...) as StorageError naming that url."""
    @functools.wraps(function)
    def wrapper(url: str, *args, **kwargs):
        try:
            return function(url, *args, **kwargs)
        except StorageError:
            raise
        except GsearchError as e:
            raise StorageError(str(e), url) from None
    return wrapper


class Kind(enum.Enum):
    """What a storage URL names."""

    SQLITE = "a SQLite file"                          # sqlite:///file.db: RDBStorage
    SERVER = "a database server"                      # postgresql://, mysql://: RDBStorage
    REDIS = "Optuna's journal storage on Redis"       # redis://, rediss://, unix://
    JOURNAL = "Optuna's journal storage in a file"    # a path ending in .log
    GRPC = "a gsearch serve-storage proxy"            # grpc://HOST:PORT


_REDIS = ("redis://", "rediss://", "unix://")
_URL = re.compile(r"^(?P<scheme>[\w+]+)://(?P<rest>.*)$", re.DOTALL)   # SQLAlchemy's shape
# The database part of a URL as SQLAlchemy reads it (sqlalchemy.engine.url._parse_url, 2.0),
# unquoted as it unquotes it: a SQLite file's path, without importing SQLAlchemy.
_DATABASE = re.compile(r"""[\w+]+://
                           (?:[^:/]*(?::[^@]*)?@)?                  # user and password
                           (?:(?:\[[^/?]+\]|[^/:?]+)?(?::[^/?]*)?)?  # host and port
                           (?:/(?P<database>[^?]*))?""", re.X)


@dataclass(frozen=True)
class StorageURL:
    """A storage URL as given (`url`) and what it names, parsed once by `parse`.

    >>> location = StorageURL.parse("sqlite:///runs/studies.db")
    >>> location.kind, str(location.path), str(location.artifact_dir)
    (<Kind.SQLITE: 'a SQLite file'>, 'runs/studies.db', 'runs/studies-artifacts')
    >>> StorageURL.parse("postgresql://me:secret@db/gsearch").safe
    'postgresql://me:***@db/gsearch'
    >>> StorageURL.parse("redis://localhost:6379/0").has_heartbeats
    False
    """

    url: str
    kind: Kind
    path: Path | None = None               # SQLite and journal: the file
    scheme: str = ""                       # SQLite and servers: SQLAlchemy's dialect[+driver]
    address: tuple[str, int] | None = None  # gRPC: the proxy's host and port

    @classmethod
    def parse(cls, url: str) -> StorageURL:
        """What `url` names; a one-line GsearchError for a URL that names no storage."""
        if url.startswith(_REDIS):
            return cls(url, Kind.REDIS)
        if url.startswith("grpc://"):
            host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
            if not host or not port.isdigit():
                raise GsearchError(f"bad storage URL {url!r}; use grpc://HOST:PORT of a "
                                   "'gsearch serve-storage'")
            return cls(url, Kind.GRPC, address=(host, int(port)))
        if "://" not in url and url.endswith(".log"):
            return cls(url, Kind.JOURNAL, Path(url))
        match = _URL.match(url)
        if not match or not _known_dialect(match["scheme"]):
            raise GsearchError(bad_url(url))
        scheme = match["scheme"]
        if scheme.partition("+")[0] != "sqlite":
            return cls(url, Kind.SERVER, scheme=scheme)
        database = unquote(_DATABASE.match(url)["database"] or "")
        if database in ("", ":memory:"):
            raise GsearchError("an in-memory SQLite storage keeps nothing; give a file, "
                               f"for example {DEFAULT_STORAGE}")
        return cls(url, Kind.SQLITE, Path(database), scheme)

    @property
    def safe(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return safe_url(self.url)

    @property
    def has_heartbeats(self) -> bool:
        """Whether open_storage(url, heartbeat=...) gives trials heartbeats: RDB storages do;
        Optuna's journal storages (Redis, a .log file) and its gRPC proxy do not."""
        return self.kind in (Kind.SQLITE, Kind.SERVER)

    @property
    def artifact_dir(self) -> Path | None:
        """The artifact folder beside a SQLite or journal file (dir/studies.db ->
        dir/studies-artifacts); None for a server storage (it takes --artifacts)."""
        if self.path is None:
            return None
        return self.path.with_name(f"{self.path.stem}-artifacts")


def bad_url(url: str) -> str:
    return (f"bad storage URL {safe_url(url)!r}; use for example {DEFAULT_STORAGE}, "
            "postgresql://user@host/dbname, mysql://user@host/dbname, redis://host:6379/0, "
            "grpc://host:13000 or a journal file studies.log")


def _known_dialect(scheme: str) -> bool:
    """Whether SQLAlchemy has the dialect (and driver) `scheme` names, read from its package
    folder and the dialects other packages register, without importing SQLAlchemy. A name
    this cannot judge is taken as known: open_storage decides."""
    spec = importlib.util.find_spec("sqlalchemy")
    if spec is None or not spec.submodule_search_locations:
        return True
    dialects = Path(list(spec.submodule_search_locations)[0]) / "dialects"
    dialect, _, driver = scheme.partition("+")
    folder = dialects / ("mysql" if dialect == "mariadb" else dialect)
    if (folder / "__init__.py").is_file():
        return not driver or (folder / f"{driver}.py").is_file() or dialect == "mariadb"
    from importlib.metadata import entry_points   # lazy: only for a scheme SQLAlchemy lacks

    names = {e.name for e in entry_points(group="sqlalchemy.dialects")}
    return dialect in names or scheme.replace("+", ".") in names or not dialects.is_dir()


@about_url
def check_url(url: str, *, must_exist: bool = False) -> StorageURL:
    """The checks of open_storage that need neither Optuna, SQLAlchemy nor a server: the
    URL's shape and scheme, and for a SQLite or journal file its folder (and with
    `must_exist` the file). Same one-line errors as open_storage, in milliseconds, so the
    CLI runs it before it imports torch and Optuna. What the URL names."""
    location = StorageURL.parse(url)
    path = location.path
    if path is None:
        return location
    if not path.parent.is_dir():
        raise GsearchError(f"folder {path.parent} for storage {location.safe} does not exist; "
                           "create it or choose another path")
    if must_exist and not path.is_file():
        raise GsearchError(f"no study storage at {path}; run 'gsearch run' first or pass "
                           "--storage")
    if not path.exists() and not os.access(path.parent, os.W_OK):
        raise GsearchError(f"cannot create {location.safe}: folder {path.parent} is "
                           "read-only; choose another path")
    return location


def check_study_name(name: str) -> None:
    """A study name every storage can keep, checked before the storage is touched (PostgreSQL
    and MySQL refuse a longer one with a traceback; SQLite would keep what the others refuse)."""
    if len(name) > MAX_STUDY_NAME:
        raise GsearchError(f"--study name is {len(name)} characters long; a storage keeps at most "
                           f"{MAX_STUDY_NAME}: choose a shorter name")
