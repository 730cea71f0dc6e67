"""The predict flow's parameters (the UI form) and its deployment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.predict import PredictParams, deployment


def test_parameters_are_validated() -> None:
    assert PredictParams(source="clip.mp4").run_id == "latest"
    for bad in ({}, {"source": ""}, {"source": "x", "fps": 0}, {"source": "x", "run_id": "../etc"},
                {"source": "x", "max_frames": 0}, {"source": "x", "colour": "red"}):
        with pytest.raises(ValidationError):
            PredictParams(**bad)


def test_deployment() -> None:
    runner = deployment()
    assert runner.name == "default" and runner.enforce_parameter_schema
    schema = runner._parameter_openapi_schema  # what the server validates runs against
    assert schema.required == ["params"] and schema.definitions["PredictParams"]["required"] == ["source"]
