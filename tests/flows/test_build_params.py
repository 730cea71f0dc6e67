"""The CLI checks build-features parameters with `BuildParams` before Prefect loads; the flow's
own signature must take exactly the same parameters, or the two would refuse different things."""

import inspect
import typing

import pytest
from pydantic import TypeAdapter, ValidationError

from flows.build_features import build_features
from flows.build_params import BuildParams


def _schema(annotation) -> dict:
    return TypeAdapter(annotation).json_schema()


def test_the_flow_takes_the_parameters_the_cli_checks():
    signature = inspect.signature(build_features.fn)
    hints = typing.get_type_hints(build_features.fn, include_extras=True)
    assert list(signature.parameters) == list(BuildParams.model_fields)
    model = BuildParams.model_json_schema()["properties"]
    for name, parameter in signature.parameters.items():
        field = BuildParams.model_fields[name]
        expected = None if field.is_required() else field.default
        assert (parameter.default if parameter.default is not inspect.Parameter.empty else None) == expected, name
        flow_schema = _schema(hints[name])
        model_schema = {k: v for k, v in model[name].items() if k not in ("title", "default")}
        assert flow_schema == model_schema, name


@pytest.mark.parametrize("bad", [{"workers": 0}, {"fps": 0}, {"num_faces": 17}, {"min_confidence": 1.5},
                                 {"extractor": "dlib"}, {"source": ""}, {"max_frames": 0}, {"unknown": 1}])
def test_bad_values_are_refused_by_both(bad):
    params = {"source": "videos", **bad}
    with pytest.raises(ValidationError):
        BuildParams.model_validate(params)
    if "unknown" not in bad:  # Prefect drops unknown names instead of refusing them
        with pytest.raises(Exception, match="|".join(bad)):
            build_features.validate_parameters(params)
