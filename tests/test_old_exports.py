"""Exports written by an earlier gsearch keep loading and predicting the same (tests/fixtures)."""

import json
from pathlib import Path

import numpy as np
import pytest

from gsearch.models.predict import ExportedModel, predict_csv

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "export-0.1.0"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("name", ["single", "ensemble"])
def test_an_export_of_gsearch_0_1_0_loads_verified_and_predicts_as_it_did(name, backend):
    model = ExportedModel(FIXTURES / name, backend)
    assert model.verified
    expected = json.loads((FIXTURES / "expected.json").read_text())[name]
    predictions = predict_csv(model, FIXTURES / "rows.csv")
    assert len(predictions) == len(expected) == 5
    for prediction, probabilities in zip(predictions, expected):
        assert list(prediction.probabilities) == list(probabilities)   # same order: most likely first
        np.testing.assert_allclose(list(prediction.probabilities.values()),
                                   list(probabilities.values()), atol=1e-5)


def test_the_predict_command_reads_an_export_of_gsearch_0_1_0(cli):
    result = cli("predict", "--model", FIXTURES / "ensemble", FIXTURES / "rows.csv", "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.output)
    expected = json.loads((FIXTURES / "expected.json").read_text())["ensemble"]
    assert [a["genre"] for a in answers] == [next(iter(p)) for p in expected]


@pytest.mark.parametrize("name", ["single", "ensemble"])
def test_the_manifest_of_an_export_of_gsearch_0_1_0_writes_back_the_same_json(name):
    from gsearch.models.manifest import ExportManifest

    manifest, written, verified = ExportManifest.read(FIXTURES / name)
    assert verified and manifest.to_json() == written
    assert list(manifest.to_json()) == list(written)   # in the same order
    report = json.loads((FIXTURES / name / "report.json").read_text())
    assert manifest.report(report["test"]) == report
