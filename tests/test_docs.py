"""The runnable examples in the docstrings of the public API and central functions."""

import doctest
import importlib

import pytest

MODULES = ["gsearch.data", "gsearch.data.load", "gsearch.models", "gsearch.models.schedule", "gsearch.models.metrics",
           "gsearch.models.population", "gsearch.search", "gsearch.search.protocol",
           "gsearch.search.space"]


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
