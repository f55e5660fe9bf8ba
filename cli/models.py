"""`gsearch extract`, `gsearch predict` and `gsearch serve`: from audio to a feature table, and
an exported model put to use, from files or over HTTP. None of them loads Optuna."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import click

from gsearch import GsearchError
from gsearch.cli._common import lazy, max_data_option, sep_option, user_errors

BACKEND_HELP = {"predict": "Run the model with onnxruntime (model.onnx; starts faster) or torch (model.pt).",
                "serve": "onnx: model.onnx through onnxruntime; torch: the weights-only model.pt."}
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
REINSTALL = "install gsearch's pinned requirements, from its folder: pip install -r requirements.txt ."


@click.command(short_help="Audio files to the 57 GTZAN features (CSV).")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="CSV to write (Kaggle schema: filename,length,<57 features>,label).")
@click.option("--segment-seconds", type=click.Choice(["30", "3"]), default="30", show_default=True,
              help="30: one row per file, over the whole file (like features_30_sec.csv); "
                   "3: one row per consecutive 3 s segment (like features_3_sec.csv).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (files are extracted in parallel).")
@user_errors
def extract(paths, out, segment_seconds, jobs) -> None:
    """Extract the 57 GTZAN features of audio files (or folders, recursively) into a CSV.
    The label is each file's parent folder, whatever it is (LIBRARY/<label>/<file>; GTZAN's
    genres_original/<genre>/<file> is one case)."""
    report = lazy("gsearch.data.extract").extract_to_csv(
        paths, out, segment_seconds=None if segment_seconds == "30" else 3.0, jobs=jobs)
    done = f"wrote {report.rows} rows from {report.files - len(report.failed)} file(s) to {out}"
    if report.failed:
        raise GsearchError(f"{len(report.failed)} of {report.files} file(s) skipped (listed above); "
                           + (done if report.rows else "nothing written"))
    click.echo(done)


@click.command(short_help="Classify audio files or feature CSVs.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by 'gsearch export-best'.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Show the K most likely genres [default: 1; with --json: all].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {file, genre, probabilities}.")
@click.option("--sets", is_flag=True,
              help="Also print each prediction's conformal set (the classes the model cannot rule "
                   "out) or interval (a regression), at the level the model was calibrated at "
                   "(model.json \"calibration\"; 90%% by default).")
@click.option("--out", "out_csv", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE.csv",
              help="Also write the predictions as a table: file, source, row, prediction, each "
                   "class's probability (and --sets' set or interval).")
@sep_option
@click.option("--missing", metavar="WORDS", default=None,
              help="The words that mean an empty cell besides an empty one (a comma list; '': "
                   "none) [default: the words the model's table was read with (model.json "
                   "\"reading\"), else NA, N/A, null, None, nan].")
@max_data_option
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help=BACKEND_HELP["predict"])
@user_errors
def predict(model_dir, files, top_k, as_json, sets, out_csv, sep, missing, max_data_mb,
            backend) -> None:
    """Classify audio files (or folders) and feature CSVs (one result per row) with an exported
    model. Audio longer than two of the model's clips is classified in clip-long windows, averaged.
    A row or file that cannot be read is said on stderr and the others are predicted (exit 1)."""
    if sys.stderr.isatty():   # a new process: say what the first second or two is spent on
        click.echo(f"gsearch predict: loading the model and {len(files)} path(s) ...", err=True)
    predicting = lazy("gsearch.models.predict")
    model = predicting.ExportedModel(model_dir, backend)
    if sets:
        model.calibration()   # one line now when the model has none
    errors = []

    def report(error: GsearchError) -> None:  # one line per bad file; the others go on
        errors.append(error)
        click.echo(f"error: {error}", err=True)

    predictions = list(predicting.predict_files(model, files, on_error=report, sets=sets, sep=sep,
                                                max_mb=max_data_mb, missing=missing))
    if out_csv is not None:
        predicting.predictions_table(model, predictions).to_csv(out_csv, index=False)
    if as_json:
        click.echo(json.dumps([p.to_json(top_k) for p in predictions], indent=2))
    else:
        for p in predictions:
            click.echo(p.format(top_k or 1))
    if errors:
        sys.exit(1)


@click.command("serve", short_help="Serve an exported model over HTTP.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by 'gsearch export-best'.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the model to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port of the HTTP server.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes sharing the port (each loads the model).")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help=BACKEND_HELP["serve"])
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50.0,
              show_default=True, help="Largest request body (audio upload or JSON rows).")
@click.option("--max-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Most feature rows in one POST /predict.")
@click.option("--max-values", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Most values (rows x features) in one request: a wide model takes fewer rows.")
@click.option("--max-audio-seconds", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Longest audio upload (read from its header, before decoding).")
@click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds a request body may take to arrive (then 408).")
@user_errors
def serve(model_dir, **settings) -> None:
    """Serve an exported model over HTTP: /predict (feature rows), /predict/audio (an upload),
    /model, /health, and the Open Inference Protocol (KServe v2) under /v2; OpenAPI docs at /docs."""
    # install_requires has them; say every one that is missing, in one line, before importing any
    missing = [package for module, package in SERVE_PACKAGES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise GsearchError(f"gsearch serve needs {', '.join(missing)}, not installed here; {REINSTALL}")
    try:
        server = lazy("gsearch.serve")
    except ModuleNotFoundError as e:  # a package those need, missing or broken
        raise GsearchError(f"gsearch serve needs {e.name}, not installed here; {REINSTALL}") from None
    server.serve(model_dir, echo=click.echo, **settings)
