"""The run form a deployment shows in the Prefect UI: its parameter schema, made for people.

Prefect writes an optional parameter (`str | None = None`) as `anyOf: [string, null]` with a
`null` default; the UI then draws a type switch set to "None" and the text "Property is type
None" where the field should be. `form_schema` writes such a field as its non-null type with no
default: left empty, the field is simply not sent and the flow's default (None) applies. Object
defaults (a pydantic parameter model's values) lose their `null` entries the same way.
"""

from __future__ import annotations

from typing import Any


def form_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (an OpenAPI parameter schema) with every optional property rewritten as above,
    in its top-level properties and in its definitions."""
    schema = dict(schema)
    schema["properties"] = {k: _field(v) for k, v in schema.get("properties", {}).items()}
    schema["definitions"] = {name: {**d, "properties": {k: _field(v) for k, v in d["properties"].items()}}
                             if "properties" in d else d for name, d in schema.get("definitions", {}).items()}
    return schema


def _field(prop: dict[str, Any]) -> dict[str, Any]:
    prop = dict(prop)
    branches = prop.get("anyOf", [])
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) == 1 and len(branches) == 2:
        del prop["anyOf"]
        prop = {**kept[0], **prop}
        if prop.get("default", ...) is None:
            del prop["default"]
    if isinstance(prop.get("default"), dict):
        prop["default"] = _without_nulls(prop["default"])
    return prop


def _without_nulls(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_nulls(v) if isinstance(v, dict) else v for k, v in value.items() if v is not None}


def apply_form_schema(deployment):
    """A `RunnerDeployment` whose parameter schema (what the UI draws and the server validates
    runs against, with `enforce_parameter_schema`) is `form_schema` of Prefect's."""
    from prefect.utilities.callables import ParameterSchema

    deployment._parameter_openapi_schema = ParameterSchema(
        **form_schema(deployment._parameter_openapi_schema.model_dump()))
    return deployment
