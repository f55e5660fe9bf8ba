"""The export manifest: an export folder's model.json as one dataclass, `ExportManifest`.

Export writes it (models.export.save_model), and predict, serve, the CLI, the dashboard and
evaluate read it; nothing else reads model.json by key. It says what the model is (classes,
features, each member's TrialConfig), where it came from (study, trials, split) and how it did
on the test split, and it carries the integrity record of the folder: the SHA-256 of model.onnx
and model.pt and a digest of its own fields that decide what a prediction means (meta_sha256).

The manifest is versioned by its `format`: gsearch-mlp/1 (one model), gsearch-mlp-ensemble/2
(an ensemble: each member under "members" with its trial, scores and hyperparameters), and the
older gsearch-mlp-ensemble/1 (members as bare hyperparameter dicts), still read. An export
written before the integrity fields existed loads unverified (`read` says so).

>>> from gsearch.models.config import TrialConfig
>>> manifest = ExportManifest(classes=("a", "b"), features=("x", "y"), configs=(TrialConfig(),))
>>> manifest.format, manifest.n_features, manifest.to_json()["hyperparameters"]["width"]
('gsearch-mlp/1', 2, 256)
>>> ExportManifest.from_json(manifest.to_json()) == manifest
True
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

from gsearch import GsearchError
from gsearch.models.config import TrialConfig

MODEL_FILE, ONNX_FILE, META_FILE = "model.pt", "model.onnx", "model.json"
REPORT_FILE, CONFUSION_FILE = "report.json", "confusion_matrix.png"
FORMAT, ENSEMBLE_FORMAT = "gsearch-mlp/1", "gsearch-mlp-ensemble/2"
OLD_ENSEMBLE_FORMAT = "gsearch-mlp-ensemble/1"  # members were a list of hyperparameter dicts
FORMATS = (FORMAT, ENSEMBLE_FORMAT, OLD_ENSEMBLE_FORMAT)
# model.json's fields that decide what a prediction means, covered by its meta_sha256
COVERED_FIELDS = ("format", "classes", "features", "n_features", "n_classes", "hyperparameters",
                  "members", "clip_samples", "sha256")
INTEGRITY_FIELDS = ("n_features", "n_classes", "sha256", "meta_sha256")  # absent in older exports
AGAIN = "export the model again"
# The window for exports that do not record clip_samples: a GTZAN 30 s clip (features_30_sec.csv).
DEFAULT_CLIP_SAMPLES = 661794
_WHOLE = ("n_layers", "width", "batch_size", "epochs")   # sizes that build modules


@dataclass(frozen=True)
class Member:
    """One member of an exported ensemble: its trial and scores, and what it trained."""

    config: TrialConfig
    trial: int | None = None
    validation_accuracy: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None

    def to_json(self) -> dict:
        scores = {"trial": self.trial, "validation_accuracy": self.validation_accuracy,
                  "test_accuracy": self.test_accuracy, "test_macro_f1": self.test_macro_f1}
        return {**{k: v for k, v in scores.items() if v is not None},
                "hyperparameters": self.config.to_dict()}


@dataclass(frozen=True)
class ExportManifest:
    """model.json. `configs`: the model's TrialConfig, or each member's (best first) for an
    ensemble, whose `members` then record their trials and scores. Fields an export did not
    record are None (an older export, or a model saved outside export-best)."""

    classes: tuple[str, ...]
    features: tuple[str, ...]
    configs: tuple[TrialConfig, ...]
    members: tuple[Member, ...] = ()
    # where it came from
    study: str | None = None
    trial_number: int | None = None          # the best trial (an ensemble's first member)
    validation_accuracy: float | None = None
    pick: str | None = None                  # the rule that chose it
    objectives: tuple[str, ...] | None = None
    within_limits: bool | None = None        # a study with limits: the picked trial's
    objective: str | None = None             # what validation_accuracy measures
    # the test split, read once after the choice
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    n_test: int | None = None
    retrained_on_rows: int | None = None
    train_seconds: float | None = None
    data_sha256: str | None = None
    clip_samples: int | None = None          # audio longer than two of these is windowed
    split: dict | None = None                # the protocol's split options
    # measured and recorded when the folder is written (models.export.save_model)
    n_params: int | None = None
    latency_ms: float | None = None
    versions: dict | None = None
    sha256: dict | None = None               # model file name -> SHA-256
    old_format: bool = False                 # read from a gsearch-mlp-ensemble/1 folder

    @property
    def ensemble(self) -> bool:
        return len(self.configs) > 1 or bool(self.members)

    @property
    def format(self) -> str:
        return OLD_ENSEMBLE_FORMAT if self.old_format else ENSEMBLE_FORMAT if self.ensemble else FORMAT

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def window(self) -> int:
        """The samples of one clip-long audio window (clip_samples, or GTZAN's 30 s)."""
        return int(self.clip_samples or DEFAULT_CLIP_SAMPLES)

    def to_json(self) -> dict:
        """model.json's content, in its documented order; fields not recorded are left out."""
        head = {"format": self.format, "classes": list(self.classes), "features": list(self.features)}
        if self.sha256 is not None:
            head |= {"n_features": self.n_features, "n_classes": self.n_classes, "sha256": self.sha256}
        if not self.ensemble:
            head["hyperparameters"] = self.configs[0].to_dict()
        described = {name: getattr(self, name) for name in _DESCRIBED}
        described["objectives"] = None if self.objectives is None else list(self.objectives)
        described["members"] = (None if not self.members else
                                [m.config.to_dict() for m in self.members] if self.old_format
                                else [m.to_json() for m in self.members])
        body = {k: v for k, v in described.items() if v is not None}
        data = {**head, **body}
        if self.sha256 is not None:
            data["meta_sha256"] = meta_digest(data)
        return data

    @classmethod
    def from_json(cls, meta: dict, path: Path = Path(META_FILE)) -> "ExportManifest":
        """The manifest of a parsed model.json, checked (one GsearchError line naming `path`):
        a known format, classes and features as lists of distinct names, hyperparameters whose
        sizes are whole numbers. The integrity fields are checked by `read`."""
        if not isinstance(meta, dict):
            raise GsearchError(f"{path} is damaged (not a JSON object); {AGAIN}")
        fmt = meta.get("format", FORMAT)
        if fmt not in FORMATS:
            shown = repr(fmt)[:60]
            raise GsearchError(f"{path} has format {shown}, which this gsearch cannot read; "
                               f"upgrade gsearch or {AGAIN}")
        classes = _names(meta, "classes", "class", path, 2)
        features = _names(meta, "features", "feature", path, 1)
        try:
            members = _members(meta, fmt)
            configs = (tuple(m.config for m in members) if members
                       else (_config(meta["hyperparameters"]),))
            known = {f.name for f in fields(cls)} & set(meta) & set(_DESCRIBED) - {"members"}
            described = {k: meta[k] for k in known}
            if described.get("objectives") is not None:
                described["objectives"] = tuple(described["objectives"])
            if described.get("clip_samples") is not None:
                described["clip_samples"] = int(described["clip_samples"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise GsearchError(f"{path} is damaged ({str(e).splitlines()[0][:200]}); "
                               f"{AGAIN}") from None
        return cls(classes=classes, features=features, configs=configs, members=members,
                   sha256=meta.get("sha256"), old_format=fmt == OLD_ENSEMBLE_FORMAT, **described)

    @classmethod
    def read(cls, directory: Path) -> tuple["ExportManifest", dict, bool]:
        """model.json of an export folder: (manifest, the JSON as written, verified). Checked
        as `from_json` does, and where the export records them (INTEGRITY_FIELDS, every export
        since they were added) the shapes and the digest of its own covered fields; verified
        is False for an older export without digests."""
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise GsearchError(f"{directory} is not a gsearch export (no {META_FILE}); "
                               "pass the --out folder of 'gsearch export-best'")
        try:
            meta = json.loads(path.read_bytes())
        except RecursionError:
            raise GsearchError(f"{path} is damaged (nested too deep to be a model.json); {AGAIN}") from None
        except (ValueError, OSError) as e:
            raise GsearchError(f"{path} is damaged ({str(e).splitlines()[0]}); {AGAIN}") from None
        if not isinstance(meta, dict):
            raise GsearchError(f"{path} is damaged (not a JSON object); {AGAIN}")
        verified = _check_integrity(meta, path)
        return cls.from_json(meta, path), meta, verified

    def report(self, test: dict) -> dict:
        """report.json's content: the manifest's description of the model (where it came from,
        its scores, size and latency; not its classes, features or digests) and `test`, the
        full report of the test split (models.metrics.classification_scores)."""
        data = self.to_json()
        return {**{k: data[k] for k in _DESCRIBED if k in data and k != "versions"}, "test": test}

    def write(self, directory: Path) -> dict:
        """Write model.json into `directory`; returns what was written."""
        data = self.to_json()
        (Path(directory) / META_FILE).write_text(json.dumps(data, indent=2) + "\n")
        return data


# the fields written after the model's own description, in model.json's order
_DESCRIBED = ("study", "trial_number", "validation_accuracy", "pick", "objectives", "within_limits",
              "objective", "test_accuracy", "test_macro_f1", "n_test", "retrained_on_rows",
              "train_seconds", "data_sha256", "clip_samples", "split", "members", "n_params",
              "latency_ms", "versions")


def meta_digest(meta: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of meta's COVERED_FIELDS."""
    covered = {key: meta[key] for key in COVERED_FIELDS if key in meta}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _config(values: dict) -> TrialConfig:
    """A TrialConfig from model.json's hyperparameters; sizes that build modules must be whole
    numbers and batch_norm a flag (TypeError otherwise)."""
    config = TrialConfig.from_dict(values)
    for key in (*_WHOLE, "batch_norm"):
        value = getattr(config, key)
        if type(value) is not (bool if key == "batch_norm" else int):
            raise TypeError(f"hyperparameter {key}={str(value)[:40]} is not a "
                            f"{'true/false flag' if key == 'batch_norm' else 'whole number'}")
    return config


def _members(meta: dict, fmt: str) -> tuple[Member, ...]:
    if fmt == FORMAT:
        return ()
    members = meta["members"]
    if not members:
        raise ValueError("an ensemble without members")
    if fmt == OLD_ENSEMBLE_FORMAT:
        return tuple(Member(_config(m)) for m in members)
    return tuple(Member(_config(m["hyperparameters"]), m.get("trial"), m.get("validation_accuracy"),
                        m.get("test_accuracy"), m.get("test_macro_f1")) for m in members)


def _names(meta: dict, key: str, what: str, path: Path, least: int) -> tuple[str, ...]:
    names = meta.get(key)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise GsearchError(f"{path} is damaged ('{key}' is not a list of {what} names); {AGAIN}")
    if len(names) < least or len(set(names)) != len(names):
        dup = [n for n in names if names.count(n) > 1]
        why = f"'{dup[0]}' twice" if dup else f"{len(names)} of them, fewer than {least}"
        raise GsearchError(f"{path} is damaged ('{key}': {why}); {AGAIN}")
    return tuple(names)


def _check_integrity(meta: dict, path: Path) -> bool:
    """The integrity fields of a parsed model.json, where it records them: all of them, its own
    digest, counts that match its lists, digests of both model files. False: none recorded
    (an export written before they existed)."""
    fmt = meta.get("format", FORMAT)
    if fmt in FORMATS:   # else from_json names the format
        _names(meta, "classes", "class", path, 2)
        _names(meta, "features", "feature", path, 1)
    recorded = [key for key in INTEGRITY_FIELDS if key in meta]
    if not recorded or fmt not in FORMATS:
        return False
    if len(recorded) < len(INTEGRITY_FIELDS):
        lost = next(key for key in INTEGRITY_FIELDS if key not in meta)
        raise GsearchError(f"{path} records {recorded[0]} but not {lost} (edited after export); {AGAIN}")
    if meta["meta_sha256"] != meta_digest(meta):
        raise GsearchError(f"{path} was changed after export (its classes, features, hyperparameters "
                           f"or digests no longer match its meta_sha256); {AGAIN}")
    for key, names in (("n_features", meta["features"]), ("n_classes", meta["classes"])):
        if meta[key] != len(names):
            raise GsearchError(f"{path} is damaged ({key} is {meta[key]!r} but it lists "
                               f"{len(names)} {key[2:]}); {AGAIN}")
    digests = meta["sha256"]
    if not (isinstance(digests, dict) and all(
            isinstance(digests.get(name), str) and re.fullmatch(r"[0-9a-f]{64}", digests[name])
            for name in (ONNX_FILE, MODEL_FILE))):
        raise GsearchError(f"{path} is damaged ('sha256' does not hold the digests of "
                           f"{ONNX_FILE} and {MODEL_FILE}); {AGAIN}")
    return True
