"""An export folder written whole or not at all, and never over something else.

`check_target` says, with the standard library only (the CLI and the requests call it before
any heavy import, before a search or a retraining), whether a folder may receive an export:
a new folder (whose nearest existing parent is a writable folder), an empty one, or gsearch's
own export of the same study (model.json's `study` and `storage`); another study's export
only with `force`; never a folder that holds anything else (a file of the user's, a symlink,
a sub-folder), and never a path under a regular file.

`replacing` writes: the export goes into a fresh hidden folder beside the target (same file
system), and only once every file is complete is it renamed into place; an export that was
there is moved aside first and removed after. A failure (a full disk, anything) removes the
partial folder and leaves the target as it was; an OSError becomes one GsearchError line.
Nothing is written through a symlink: the files are new ones in a new folder, and the renames
move directory entries, never what a link points to.

`--out` may itself be a symlink to a folder (a user's `export -> /data/models/v3`): the folder
it points to is checked and written as if named directly (the user chose the link; the rules
above keep what it points to from being anything but an empty folder or an export). A symlink
that points nowhere is refused: the folder it would create is not one the user named.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gsearch import GsearchError

MODEL_FILE, ONNX_FILE, META_FILE = "model.pt", "model.onnx", "model.json"
REPORT_FILE, CONFUSION_FILE = "report.json", "confusion_matrix.png"
SCATTER_FILE = "predicted_vs_actual.png"   # a regression's test plot, where a classifier has
                                           # its confusion matrix
ESTIMATOR_FILE = "estimator.json"          # the Python estimators' save adds it
EXPORT_FILES = frozenset({MODEL_FILE, ONNX_FILE, META_FILE, REPORT_FILE, CONFUSION_FILE,
                          SCATTER_FILE, ESTIMATOR_FILE})
FORCE_HINT = "pass --force to replace it, or choose another {option}"


@dataclass(frozen=True)
class Owner:
    """Whose export a folder holds: the study's name and its storage (search.storage's
    storage_identity; None: a study in memory, or an export that did not record it)."""

    study: str | None
    storage: str | None = None

    def describe(self) -> str:
        if self.study is None:
            return "no recorded study"
        return f"study '{self.study}'" + (f" of {self.storage}" if self.storage else "")

    def same(self, other: "Owner") -> bool:
        """The same study: its name, and its storage where both record one (an export written
        before exports recorded their storage matches by name)."""
        return self.study == other.study and (self.storage is None or other.storage is None
                                              or self.storage == other.storage)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type where it has none (an empty file
    read by torch.load raises an error without words)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def owner_of(folder: Path) -> Owner | None:
    """The owner model.json records in an export folder (None: no readable model.json of a
    gsearch export). model.json is read only where it is a regular file, not a symlink."""
    meta = Path(folder) / META_FILE
    if meta.is_symlink() or not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_bytes())
    except (ValueError, OSError, RecursionError):
        return None
    if not isinstance(data, dict) or not str(data.get("format", "gsearch-mlp/1")).startswith("gsearch-"):
        return None
    study, storage = data.get("study"), data.get("storage")
    return Owner(study if isinstance(study, str) else None,
                 storage if isinstance(storage, str) else None)


def _foreign(folder: Path) -> list[str]:
    """What a folder holds that an export does not: names other than EXPORT_FILES, any entry
    that is not a regular file (a symlink, a sub-folder), and, where there is no model.json,
    everything (a report.json of one's own is not an export)."""
    foreign = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_symlink():
                foreign.append(f"{entry.name} (a symlink)")
            elif entry.is_dir(follow_symlinks=False):
                foreign.append(f"{entry.name}/")
            elif entry.name not in EXPORT_FILES or not entry.is_file(follow_symlinks=False):
                foreign.append(entry.name)
    meta = Path(folder) / META_FILE
    if not os.path.lexists(meta):   # export names without a model.json: the user's files
        foreign = sorted(os.listdir(folder))
    return foreign


def _shown(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_target(out: Path, owner: Owner | None = None, *, force: bool = False,
                 option: str = "--out") -> Path:
    """The folder an export to `out` writes (out itself, or the folder a symlink `out` points
    to), after the checks of the module's rules; one GsearchError line otherwise. `owner`: the
    study being exported (None: not known yet, the owner is not compared)."""
    out = Path(out)
    real = Path(os.path.realpath(out))
    if out.is_symlink() and not os.path.lexists(real):
        raise GsearchError(f"{option} {out} is a symlink to {os.readlink(out)}, which does not exist; "
                           f"choose a folder (a new or empty one, or an earlier export)")
    if os.path.lexists(real):
        if not real.is_dir():
            raise GsearchError(f"{option} {out} is a file, not a folder; choose a new or empty folder")
        _writable(real.parent, out, option)
        try:
            foreign = _foreign(real)
        except OSError as e:
            raise GsearchError(f"cannot read the folder {out} ({e.strerror or e}); choose another "
                               f"{option}") from None
        if foreign:
            raise GsearchError(f"{option} {out} holds files that are not a gsearch export: "
                               f"{_shown(foreign)}; choose an empty or new folder")
        if not any(real.iterdir()):
            return real
        there = owner_of(real)
        if there is None and not force:
            raise GsearchError(f"{option} {out} holds export files without a readable gsearch "
                               f"model.json (a damaged export?); "
                               + FORCE_HINT.format(option=option))
        if there is not None and owner is not None and not there.same(owner) and not force:
            raise GsearchError(f"{option} {out} holds the export of {there.describe()}, not of "
                               f"{owner.describe()}; " + FORCE_HINT.format(option=option))
        return real
    parent = real.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise GsearchError(f"cannot create the folder {out}: {parent} is a file, not a folder; "
                           f"choose another {option}")
    _writable(parent, out, option)
    return real


def _writable(parent: Path, out: Path, option: str) -> None:
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GsearchError(f"cannot write the export {out}: the folder {parent} is not writable; "
                           f"choose another {option}")


@contextmanager
def replacing(out: Path, owner: Owner | None = None, *, force: bool = False, option: str = "--out"):
    """Yield a new empty folder beside `out` to write an export into; when the block ends
    without error, it becomes `out` (an export there is replaced only then). On any error the
    new folder is removed, `out` is left as it was, and an OSError (a full disk...) is raised
    as one GsearchError line."""
    real = check_target(out, owner, force=force, option=option)
    created = []   # parent folders made here, removed again if the export fails
    parent = real.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    partial = real.parent / f".{real.name}.partial-{os.urandom(4).hex()}"
    try:
        for folder in reversed(created):
            folder.mkdir()
        partial.mkdir()   # a fresh folder: every file in it is new, none a symlink
        yield partial
        _swap(partial, real)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(e, OSError):
            raise GsearchError(_write_error(e, out, real, option)) from None
        raise


def _swap(partial: Path, real: Path) -> None:
    """`partial` renamed to `real`; a folder at `real` is moved aside first and removed after.
    rename() moves the entry at `real` itself, never what a link there points to."""
    if not os.path.lexists(real):
        os.rename(partial, real)
        return
    aside = real.parent / f".{real.name}.old-{os.urandom(4).hex()}"
    os.rename(real, aside)
    try:
        os.rename(partial, real)
    except OSError:
        os.rename(aside, real)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _write_error(error: OSError, out: Path, real: Path, option: str) -> str:
    kept = f"{out} is as it was" if os.path.lexists(real) else f"{out} was not created"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk holding {real.parent} is full (no space left for the export); nothing "
                f"was written and {kept}: free space there or choose another {option}, and export again")
    if error.errno in (errno.EXDEV, errno.EBUSY):   # the target is a mount point itself
        return (f"cannot replace {out} ({error.strerror or error}): it is a mount point, and an "
                f"export is written beside its folder and renamed into place; nothing was written "
                f"and {kept}: choose a folder inside it as {option}")
    return (f"cannot write the export {out} ({error.strerror or error}); nothing was written and "
            f"{kept}")
