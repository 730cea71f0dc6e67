"""Every deployment's run form (its parameter schema, as the Prefect UI draws it) explains itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prefect.utilities.schema_tools.validation import is_valid

from affectflow.commands.serve import deployments
from affectflow.forms import form_schema

SERVED = deployments()


def _schema(deployment) -> dict:
    return deployment._parameter_openapi_schema.model_dump()  # what the server stores and the UI draws


def _fields(schema: dict):
    """(where, property) for every property of the form, nested parameter models included."""
    for name, prop in schema["properties"].items():
        yield name, prop
    for model, definition in schema["definitions"].items():
        for name, prop in definition.get("properties", {}).items():
            yield f"{model}.{name}", prop


def _type_of(prop: dict, schema: dict) -> object:
    if "$ref" in prop:
        return schema["definitions"][prop["$ref"].rsplit("/", 1)[1]].get("type")
    return prop.get("type")


@pytest.mark.parametrize("deployment", SERVED, ids=lambda d: f"{d.flow_name}/{d.name}")
def test_every_field_has_a_description_and_a_type(deployment) -> None:
    schema = _schema(deployment)
    fields = list(_fields(schema))
    assert fields
    for where, prop in fields:
        assert (prop.get("description") or "").strip(), f"{where} has no description"
        assert "(the form in the Prefect UI)" not in prop["description"]
        assert _type_of(prop, schema), f"{where} has no type (the UI would draw 'Property is type None')"
        assert "anyOf" not in prop, f"{where} is drawn as a type switch: {prop['anyOf']}"
        assert prop.get("default", "") is not None, f"{where} defaults to null"
    for where, prop in fields:  # a field that takes a value (not a whole parameter model) shows an example
        if _type_of(prop, schema) != "object":
            assert "e.g." in prop["description"], f"{where}: no example in {prop['description']!r}"


@pytest.mark.parametrize("deployment", [d for d in SERVED if d.flow_name in ("build-features", "predict")],
                         ids=lambda d: d.flow_name)
def test_source_is_required_and_said_to_be_on_the_serving_machine(deployment) -> None:
    schema = _schema(deployment)
    holder = schema if "source" in schema["properties"] else schema["definitions"]["PredictParams"]
    assert "source" in holder["required"]
    assert "must exist on the machine where the deployment is served" in holder["properties"]["source"]["description"]


@pytest.mark.parametrize("deployment", SERVED, ids=lambda d: f"{d.flow_name}/{d.name}")
def test_defaults_and_omitted_optionals_pass_the_servers_validation(deployment) -> None:
    """The rewritten schema still takes what the form sends: defaults, and empty optionals left out."""
    schema = _schema(deployment)
    defaults = {k: p["default"] for k, p in schema["properties"].items() if "default" in p}
    if deployment.flow_name == "build-features":
        assert is_valid({"source": "/data"}, schema)
        assert is_valid({"source": "/data", "labels": None}, schema)  # Prefect lets an optional field be null
        assert not is_valid({"source": "/data", "fps": 0}, schema)  # bounds kept
    elif deployment.flow_name == "predict":
        assert is_valid({"params": {"source": "/data"}}, schema) and not is_valid({"params": {}}, schema)
    else:
        assert is_valid(defaults, schema) and defaults["params"]


def test_form_schema_rewrites_optional_fields_only() -> None:
    schema = {"properties": {
        "a": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}], "default": None, "description": "d"},
        "b": {"anyOf": [{"type": "string"}, {"type": "integer"}], "default": "x"},
        "c": {"$ref": "#/definitions/M", "default": {"x": None, "y": 1}}}, "definitions": {"E": {"enum": [1]}}}
    out = form_schema(schema)["properties"]
    assert out["a"] == {"type": "string", "minLength": 1, "description": "d"}
    assert out["b"] == schema["properties"]["b"]
    assert out["c"]["default"] == {"y": 1}


def test_serve_help_lists_every_deployment() -> None:
    out = subprocess.run([sys.executable, "-m", "affectflow.cli", "serve", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for d in SERVED:
        assert f"{d.flow_name}/{d.name}" in " ".join(out.split())
