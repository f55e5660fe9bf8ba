"""The runnable examples in the docstrings of the public API and central functions, and the
names the benchmark scripts import."""

import ast
import doctest
import importlib
from pathlib import Path

import pytest

MODULES = ["gsearch", "gsearch.api._estimators", "gsearch.api._load", "gsearch.data.frame",
           "gsearch.data", "gsearch.data.load", "gsearch.data.artists", "gsearch.models", "gsearch.models.schedule", "gsearch.models.metrics",
           "gsearch.models.manifest",
           "gsearch.models.population", "gsearch.search", "gsearch.search.protocol",
           "gsearch.search.space", "gsearch.search.records", "gsearch.search.selection",
           "gsearch.search.study", "gsearch.search.parallel", "gsearch.search.storage.url"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, one_thread):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


def test_public_names_resolve():
    for package in ("gsearch.data", "gsearch.models", "gsearch.search"):
        module = importlib.import_module(package)
        assert all(getattr(module, name) is not None for name in module.__all__)
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018


@pytest.mark.parametrize("script", sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py")),
                         ids=lambda p: p.name)
def test_bench_scripts_import_names_that_exist(script):
    """A benchmark is run by hand, rarely: what it imports from gsearch must still be there."""
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gsearch"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert missing == []
