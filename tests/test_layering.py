"""The import contracts of setup.cfg's [importlinter] sections hold: the floors cli | api >
search | serve > models > data, click only in cli, no Optuna below search nor in serve, no torch
in data (docs/architecture.md). CI runs `lint-imports` as well; this test makes `python -m pytest` alone enforce it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SETUP_CFG = ROOT / "setup.cfg"


def test_import_contract_holds():
    lint_imports = (shutil.which("lint-imports", path=str(Path(sys.executable).parent))
                    or shutil.which("lint-imports"))
    assert lint_imports, "lint-imports not found: pip install -r requirements-dev.txt"
    result = subprocess.run([lint_imports, "--no-cache", "--no-logo", str(SETUP_CFG)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        "the import contract is broken (docs/contributing.md, Layout rules):\n"
        + result.stdout[result.stdout.find("Contracts"):] + result.stderr)


def test_contract_reads_only_gsearchs_own_modules():
    # The checkout's root is the package, so its other folders (tests/, bench/, a .venv/) lie
    # inside it on disk: the contract must judge gsearch's modules and nothing else.
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    packages = set(config["options"]["packages"].split())
    modules = grimp.build_graph("gsearch", cache_dir=None).modules
    strays = sorted(m for m in modules if m not in packages and m.rpartition(".")[0] not in packages)
    assert not strays, f"modules outside setup.cfg's packages in gsearch's import graph: {strays}"
    assert {"gsearch.data.load", "gsearch.models.population", "gsearch.cli.run"} <= modules
