"""What gsearch adds to optuna-dashboard: an artifact store beside the storage, and the
results of export-best attached to the study (confusion matrix and report as artifacts,
a markdown note with the test metrics on the exported trial)."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna_dashboard import run_server, save_note

from gsearch import GsearchError
from gsearch.search._compat import study_id, study_storage
from gsearch._ports import check_port
from gsearch.models.manifest import REPORT_FILE, ExportManifest
from gsearch.search import records
from gsearch.search.storage import StorageURL

if TYPE_CHECKING:   # search.export imports torch, which `gsearch dashboard` never needs
    from gsearch.search.export import Exported


def default_artifact_dir(storage_url: str | None) -> Path | None:
    """sqlite:///dir/studies.db -> dir/studies-artifacts (a journal file too); None for a
    server storage, or a study in memory (None)."""
    return None if storage_url is None else StorageURL.parse(storage_url).artifact_dir


def artifact_dir(path: Path | None, storage_url: str | None) -> Path | None:
    """The artifact folder: `path`, else beside a SQLite file; created if missing."""
    path = path or default_artifact_dir(storage_url)
    if path is None:
        return None
    try:
        path.mkdir(exist_ok=True)
    except FileNotFoundError:
        raise GsearchError(f"folder {path.parent} for the artifacts does not exist; create it "
                           "or pass another --artifacts") from None
    except OSError as e:
        raise GsearchError(f"cannot create the artifact folder {path}: {e.strerror}; "
                           "pass another --artifacts") from None
    return path


def serve(storage: optuna.storages.BaseStorage, *, host: str, port: int,
          artifacts: Path | None) -> None:
    """Run optuna-dashboard until Ctrl-C or SIGTERM (then return), with the artifact folder
    when there is one. A port that cannot be bound fails in one line, before the server starts.

    The server runs in a daemon thread and the main thread waits for the signal. (Raised in
    the server's thread, the KeyboardInterrupt of a signal that lands while a request is being
    handled is caught by wsgiref's handler, which logs it and goes on serving: the dashboard
    did not stop.)"""
    check_port(host, port, server="the dashboard")
    store = None if artifacts is None else FileSystemArtifactStore(artifacts)
    stopped: list[int] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_server(storage, host=host, port=port, artifact_store=store)
        except BaseException as e:   # handed to the main thread
            failed.append(e)

    # Ctrl-C and SIGTERM stop the server, also when it was started with SIGINT ignored (a
    # shell's `&`, a CI runner), and the command exits 0, as `gsearch serve` does
    previous = {stop: signal.signal(stop, lambda signum, frame: stopped.append(signum))
                for stop in (signal.SIGINT, signal.SIGTERM)}
    server = threading.Thread(target=run, name="optuna-dashboard", daemon=True)
    server.start()
    try:
        while not stopped and server.is_alive():
            time.sleep(0.1)   # a signal's handler runs here, in the main thread
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    if failed and not stopped:
        raise failed[0]


def _upload(study: optuna.Study, store: FileSystemArtifactStore, path: Path, filename: str) -> str:
    """Upload `path` as a study artifact named `filename`; one of the same name is replaced."""
    for meta in get_all_artifact_meta(study):
        if meta.filename == filename:
            with path.open("rb") as f:
                store.write(meta.artifact_id, f)
            return meta.artifact_id
    with tempfile.TemporaryDirectory() as tmp:  # upload_artifact names it after the file
        named = Path(tmp) / filename
        shutil.copyfile(path, named)
        return upload_artifact(artifact_store=store, file_path=str(named), study_or_trial=study)


def _deployment(manifest: ExportManifest) -> str:
    """How the model was picked, its size and its measured latency."""
    latency = manifest.latency_ms
    latency = "" if latency is None else f", {latency:.3f} ms per row (onnxruntime, CPU)"
    return f"Picked by: {manifest.pick or 'accuracy'}; {manifest.n_params} parameters{latency}.\n"


def _note(exported: Exported, links: dict[str, str]) -> str:
    manifest, test = exported.manifest, exported.test
    members = manifest.members
    alone = ", ".join(f"{(m.test_scores or {}).get(manifest.metric, float('nan')):.3f}" for m in members)
    ensemble = (f"An ensemble of trials {[m.trial for m in members]} (this trial is its best "
                f"member; test {manifest.metric.replace('_', ' ')} of each alone: {alone}).\n"
                if members else "")
    shown = "".join(f"![{'test plot' if name.endswith('.png') else name}]({url})\n\n"
                    if name.endswith(".png") else f"Full report: [{name}]({url})\n\n"
                    for name, url in links.items())
    scores = manifest.test_scores or {}
    head = " | ".join([f"test {k.replace('_', ' ')}" for k in scores] + ["validation " + manifest.metric.replace("_", " "), "test rows"])
    cells = " | ".join([f"{v:.3f}" for v in scores.values()]
                       + [f"{manifest.validation_score:.3f}", str(manifest.n_test)])
    per_class = "" if manifest.regression else _per_class(test)
    return f"""## Held-out test (gsearch export-best)

| {head} |
|{'---|' * (len(scores) + 2)}
| {cells} |

{ensemble}{_deployment(manifest)}Retrained on {manifest.retrained_on_rows} rows in {manifest.train_seconds:.1f} s;
the search never saw the test rows. Model folder: `{exported.folder.resolve()}`.
Protocol: {(manifest.split or {}).get("protocol", "not recorded")}.

{shown}{per_class}"""


def _per_class(test: dict) -> str:
    rows = "\n".join(f"| {name} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1-score']:.2f} "
                     f"| {m['support']:.0f} |"
                     for name, m in test["per_class"].items()
                     if name != "accuracy" and not name.endswith(" avg"))
    return f"""| class | precision | recall | F1 | test rows |
|---|---|---|---|---|
{rows}
"""


def attach_export(study: optuna.Study, exported: Exported, artifacts: Path | None) -> None:
    """Record export-best's results in the study so the dashboard shows them: the
    confusion matrix and report.json as study artifacts (a finished trial takes no
    artifacts), the test metrics as a note on the exported trial and a study attribute."""
    manifest, number = exported.manifest, exported.manifest.trial_number
    scores = manifest.test_scores or {}
    recorded = ({"test_accuracy": scores.get("accuracy"), "test_macro_f1": scores.get("macro_f1")}
                if not manifest.table else {"test_scores": scores})
    study.set_user_attr(records.EXPORT, {"trial_number": number, **recorded, "n_test": manifest.n_test})
    links = {}  # file name -> dashboard URL of the uploaded artifact
    if artifacts is not None:
        store = FileSystemArtifactStore(artifacts)
        for name in (manifest.plot_file, REPORT_FILE):
            artifact_id = _upload(study, store, exported.folder / name, f"trial-{number}-{name}")
            links[name] = f"/artifacts/{study_id(study)}/{artifact_id}"
    trial_id = study_storage(study).get_trial_id_from_study_id_trial_number(study_id(study), number)
    save_note(optuna.Trial(study, trial_id),  # save_note takes a live Trial, also for a finished one
              _note(exported, links))
