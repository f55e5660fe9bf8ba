"""The gsearch command line, the top floor: one module per group of commands.

Each command turns its options into one request (search.requests) and calls one library
function; it prints, and turns a GsearchError into one line on stderr and a non-zero exit
(_common.user_errors). The library is imported when a command runs (_common.lazy), so
`gsearch --help` and bad input answer before torch and Optuna load.

- run.py       `run` (search.runner.run_study)
- export.py    `export-best` (search.export.export_study), `report`
- evaluate.py  `evaluate` (search.evaluate.evaluate)
- studies.py   `studies`, `dashboard`, `serve-storage`
- models.py    `extract`, `predict`, `serve`
"""

from __future__ import annotations

import click

from gsearch import __version__
from gsearch.cli import evaluate, export, models, run, studies


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gsearch")
def main() -> None:
    """Hyperparameter search for neural networks (MLPs) on tables.

    \b
    Workflow (GTZAN's music feature table ships with gsearch):
      gsearch run --trials 200          search; results go to studies.db
      gsearch export-best               retrain the best, test on held-out rows, export/
      gsearch predict --model export song.wav   or: gsearch serve --model export
    Your own table: gsearch run --data TABLE.csv --label COLUMN --timeout 60 --export DIR

    `gsearch COMMAND --help` describes each command; `gsearch dashboard` shows a study.
    """


for command in (run.run, export.export_best, export.report, evaluate.evaluate, studies.studies,
                studies.dashboard, studies.serve_storage, models.extract, models.predict,
                models.serve):
    main.add_command(command)
