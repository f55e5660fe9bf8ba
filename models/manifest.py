"""The export manifest: an export folder's model.json as one dataclass, `ExportManifest`.

Export writes it (models.export.save_model), and predict, serve, the CLI, the dashboard and
evaluate read it; nothing else reads model.json by key. It says what the model is (its task,
classes, features and their preprocessing, each member's TrialConfig), where it came from
(study, trials, split) and how it did on the test split, and it carries the integrity record
of the folder: the SHA-256 of model.onnx and model.pt and a digest of its own fields that
decide what a prediction means (meta_sha256).

The manifest is versioned by its `format`:
- gsearch-mlp/1 and gsearch-mlp-ensemble/2: a classifier of numbers only, scored by accuracy
  (GTZAN's, and every export of gsearch 0.1.0); gsearch-mlp-ensemble/1 is still read;
- gsearch-table/1 and gsearch-table-ensemble/1: any other model, a regression, a table with text
  columns or empty cells (its `preprocessing`: data.encode.Encoding), a metric other than
  accuracy; they record `task`, `metric`, `validation_score` and `test_scores`.
A model that fits the first formats is written in them, so older readers keep reading it. An
export written before the integrity fields existed loads unverified (`read` says so).

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
from dataclasses import dataclass
from pathlib import Path

from gsearch import GsearchError
from gsearch.data.encode import Encoding
from gsearch.models.calibration import Calibration
from gsearch.models.config import TrialConfig
from gsearch.models.folder import (CONFUSION_FILE, META_FILE, MODEL_FILE, ONNX_FILE,  # noqa: F401
                                   REPORT_FILE, SCATTER_FILE, first_line)   # the folder's names, named here too

FORMAT, ENSEMBLE_FORMAT = "gsearch-mlp/1", "gsearch-mlp-ensemble/2"
OLD_ENSEMBLE_FORMAT = "gsearch-mlp-ensemble/1"  # members were a list of hyperparameter dicts
TABLE_FORMAT, TABLE_ENSEMBLE_FORMAT = "gsearch-table/1", "gsearch-table-ensemble/1"
FORMATS = (FORMAT, ENSEMBLE_FORMAT, OLD_ENSEMBLE_FORMAT, TABLE_FORMAT, TABLE_ENSEMBLE_FORMAT)
# model.json's fields that decide what a prediction means, covered by its meta_sha256; in the
# formats gsearch 0.1.0 reads, exactly those 0.1.0 covered (so that it still verifies them), in
# the table formats also the calibration (the conformal threshold decides the sets)
COVERED_FIELDS = ("format", "classes", "features", "n_features", "n_classes", "hyperparameters",
                  "members", "clip_samples", "sha256", "task", "preprocessing")
TABLE_COVERED = COVERED_FIELDS + ("calibration",)
INTEGRITY_FIELDS = ("n_features", "n_classes", "sha256", "meta_sha256")  # absent in older exports
AGAIN = "export the model again"
# The window for exports that do not record clip_samples: a GTZAN 30 s clip (features_30_sec.csv).
DEFAULT_CLIP_SAMPLES = 661794
CLASSIFICATION, REGRESSION = "classification", "regression"
_WHOLE = ("n_layers", "width", "batch_size", "epochs")   # sizes that build modules


@dataclass(frozen=True)
class Member:
    """One member of an exported ensemble: its trial and scores, and what it trained.
    `test_scores`: every metric of the task on the test split (models.metrics.metric_scores)."""

    config: TrialConfig
    trial: int | None = None
    validation_score: float | None = None
    test_scores: dict | None = None

    def to_json(self, table: bool) -> dict:
        """`table`: in the formats of gsearch-table/1 (else accuracy and macro-F1 by name)."""
        tests = self.test_scores or {}
        scores = {"trial": self.trial}
        scores |= ({"validation_score": self.validation_score, "test_scores": self.test_scores} if table
                   else {"validation_accuracy": self.validation_score, "test_accuracy": tests.get("accuracy"),
                         "test_macro_f1": tests.get("macro_f1")})
        return {**{k: v for k, v in scores.items() if v is not None},
                "hyperparameters": self.config.to_dict()}


@dataclass(frozen=True)
class ExportManifest:
    """model.json. `configs`: the model's TrialConfig, or each member's (best first) for an
    ensemble, whose `members` then record their trials and scores. `encoding`: the
    preprocessing of raw rows (None: numbers only, taken as they are). Fields an export did not
    record are None (an older export, or a model saved outside export-best)."""

    classes: tuple[str, ...]                 # () for a regression
    features: tuple[str, ...]
    configs: tuple[TrialConfig, ...]
    members: tuple[Member, ...] = ()
    task: str = CLASSIFICATION
    encoding: Encoding | None = None
    calibration: Calibration | None = None   # temperature and conformal threshold (models.calibration)
    metric: str = "accuracy"                 # what validation_score measures
    # where it came from
    study: str | None = None
    storage: str | None = None               # the study's storage, password masked (models.folder)
    trial_number: int | None = None          # the best trial (an ensemble's first member)
    validation_score: float | None = None
    pick: str | None = None                  # the rule that chose it
    objectives: tuple[str, ...] | None = None
    within_limits: bool | None = None        # a study with limits: the picked trial's
    objective: str | None = None             # what validation_score is, in words
    # the test split, read once after the choice
    test_scores: dict | None = None
    n_test: int | None = None
    retrained_on_rows: int | None = None
    train_seconds: float | None = None
    data_sha256: str | None = None
    clip_samples: int | None = None          # audio longer than two of these is windowed
    split: dict | None = None                # the protocol's split options
    reading: dict | None = None              # how its table was read: {"missing": "NA,null"}
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
    def table(self) -> bool:
        """Whether it needs the formats of gsearch-table/1 (see the module)."""
        return (self.task != CLASSIFICATION or self.metric != "accuracy"
                or (self.encoding is not None and not self.encoding.is_identity))

    @property
    def format(self) -> str:
        if self.old_format:
            return OLD_ENSEMBLE_FORMAT
        if self.table:
            return TABLE_ENSEMBLE_FORMAT if self.ensemble else TABLE_FORMAT
        return ENSEMBLE_FORMAT if self.ensemble else FORMAT

    @property
    def regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def plot_file(self) -> str:
        """The test split's plot: the confusion matrix, or a regression's predicted-actual."""
        return SCATTER_FILE if self.regression else CONFUSION_FILE

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """The network's outputs: one per class, or a regression's one number."""
        return 1 if self.regression else self.n_classes

    @property
    def n_inputs(self) -> int:
        """The network's inputs, after the preprocessing."""
        return self.n_features if self.encoding is None else self.encoding.width

    @property
    def window(self) -> int:
        """The samples of one clip-long audio window (clip_samples, or GTZAN's 30 s)."""
        return int(self.clip_samples or DEFAULT_CLIP_SAMPLES)

    def to_json(self) -> dict:
        """model.json's content, in its documented order; fields not recorded are left out."""
        table = self.table
        head = {"format": self.format}
        if table:
            head["task"] = self.task
        head |= {"classes": list(self.classes), "features": list(self.features)}
        if self.sha256 is not None:
            head |= {"n_features": self.n_features, "n_classes": self.n_classes, "sha256": self.sha256}
        if table and self.encoding is not None and not self.encoding.is_identity:
            head["preprocessing"] = self.encoding.to_json()
        if not self.ensemble:
            head["hyperparameters"] = self.configs[0].to_dict()
        tests = self.test_scores or {}
        scores = {"validation_accuracy": self.validation_score if self.metric == "accuracy" else None,
                  "test_accuracy": tests.get("accuracy"), "test_macro_f1": tests.get("macro_f1")}
        if table:   # the general fields, beside those a classifier's readers know
            scores |= {"metric": self.metric, "validation_score": self.validation_score,
                       "test_scores": self.test_scores}
        scores["members"] = (None if not self.members else
                             [m.config.to_dict() for m in self.members] if self.old_format
                             else [m.to_json(table) for m in self.members])
        described = {name: scores.get(name) if name in _SCORES else getattr(self, name)
                     for name in _DESCRIBED}
        described["objectives"] = None if self.objectives is None else list(self.objectives)
        described["calibration"] = None if self.calibration is None else self.calibration.to_json()
        body = {k: v for k, v in described.items() if v is not None}
        data = {**head, **body}
        if self.sha256 is not None:
            data["meta_sha256"] = meta_digest(data)
        return data

    @classmethod
    def from_json(cls, meta: dict, path: Path = Path(META_FILE)) -> "ExportManifest":
        """The manifest of a parsed model.json, checked (one GsearchError line naming `path`):
        a known format, classes and features as lists of distinct names, hyperparameters whose
        sizes are whole numbers, a preprocessing that describes every feature. The integrity
        fields are checked by `read`."""
        if not isinstance(meta, dict):
            raise GsearchError(f"{path} is damaged (not a JSON object); {AGAIN}")
        fmt = meta.get("format", FORMAT)
        if fmt not in FORMATS:
            shown = repr(fmt)[:60]
            raise GsearchError(f"{path} has format {shown}, which this gsearch cannot read; "
                               f"upgrade gsearch or {AGAIN}")
        task = meta.get("task", CLASSIFICATION)
        classes = _names(meta, "classes", "class", path, 0 if task == REGRESSION else 2)
        features = _names(meta, "features", "feature", path, 1)
        try:
            if task not in (CLASSIFICATION, REGRESSION):
                raise ValueError(f"unknown task {str(task)[:40]!r}")
            members = _members(meta, fmt)
            configs = (tuple(m.config for m in members) if members
                       else (_config(meta["hyperparameters"]),))
            described = {k: meta[k] for k in _DESCRIBED if k in meta and k not in _SCORES}
            if described.get("objectives") is not None:
                described["objectives"] = tuple(described["objectives"])
            if described.get("clip_samples") is not None:
                described["clip_samples"] = _clip_samples(described["clip_samples"])
            encoding = (Encoding.from_json(features, meta["preprocessing"])
                        if "preprocessing" in meta else None)
            calibration = (Calibration.from_json(meta["calibration"])
                           if meta.get("calibration") is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise GsearchError(f"{path} is damaged ({first_line(e)[:200]}); "
                               f"{AGAIN}") from None
        return cls(classes=classes, features=features, configs=configs, members=members,
                   task=task, encoding=encoding, calibration=calibration,
                   metric=meta.get("metric", "accuracy"),
                   validation_score=meta.get("validation_score", meta.get("validation_accuracy")),
                   test_scores=_test_scores(meta), sha256=meta.get("sha256"),
                   old_format=fmt == OLD_ENSEMBLE_FORMAT, **described)

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
            raise GsearchError(f"{path} is damaged ({first_line(e)}); {AGAIN}") from None
        if not isinstance(meta, dict):
            raise GsearchError(f"{path} is damaged (not a JSON object); {AGAIN}")
        verified = _check_integrity(meta, path)
        return cls.from_json(meta, path), meta, verified

    def report(self, test: dict) -> dict:
        """report.json's content: the manifest's description of the model (where it came from,
        its scores, size and latency; not its classes, features or digests) and `test`, the
        full report of the test split (models.metrics)."""
        data = self.to_json()
        skip = {"format", "task", "classes", "features", "n_features", "n_classes", "sha256",
                "preprocessing", "hyperparameters", "versions", "meta_sha256"}
        return {**{k: v for k, v in data.items() if k not in skip}, "test": test}

    def write(self, directory: Path) -> dict:
        """Write model.json into `directory`; returns what was written."""
        data = self.to_json()
        (Path(directory) / META_FILE).write_text(json.dumps(data, indent=2) + "\n")
        return data


# the fields written after the model's own description, in model.json's order (the scores
# go where validation_accuracy / test_accuracy stood in gsearch-mlp/1)
_DESCRIBED = ("study", "storage", "trial_number", "metric", "validation_score", "validation_accuracy", "pick",
              "objectives", "within_limits", "objective", "test_scores", "test_accuracy",
              "test_macro_f1", "n_test", "calibration", "retrained_on_rows", "train_seconds",
              "data_sha256", "clip_samples", "split", "reading", "members", "n_params", "latency_ms",
              "versions")
_SCORES = {"metric", "validation_score", "validation_accuracy", "test_scores", "test_accuracy",
           "test_macro_f1", "members", "calibration"}


def _test_scores(meta: dict) -> dict | None:
    if "test_scores" in meta:
        return meta["test_scores"]
    old = {k: meta[f"test_{k}"] for k in ("accuracy", "macro_f1") if f"test_{k}" in meta}
    return old or None


def meta_digest(meta: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of meta's COVERED_FIELDS
    (TABLE_COVERED in the table formats)."""
    fields = TABLE_COVERED if meta.get("format") in (TABLE_FORMAT, TABLE_ENSEMBLE_FORMAT) else COVERED_FIELDS
    covered = {key: meta[key] for key in fields if key in meta}
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


def _clip_samples(value) -> int:
    """model.json's clip_samples: the samples of one audio window, a whole number of at least
    one (ValueError otherwise: a window of -1 samples would fail every audio file)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < 1:
        raise ValueError(f"clip_samples is {str(value)[:40]}, not a positive whole number of "
                         "samples")
    return value


def _members(meta: dict, fmt: str) -> tuple[Member, ...]:
    if fmt in (FORMAT, TABLE_FORMAT):
        return ()
    members = meta["members"]
    if not members:
        raise ValueError("an ensemble without members")
    if fmt == OLD_ENSEMBLE_FORMAT:
        return tuple(Member(_config(m)) for m in members)
    return tuple(Member(_config(m["hyperparameters"]), m.get("trial"),
                        m.get("validation_score", m.get("validation_accuracy")), _test_scores(m))
                 for m in members)


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
        least = 0 if meta.get("task") == REGRESSION else 2
        _names(meta, "classes", "class", path, least)
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
