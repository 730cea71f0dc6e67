"""Prefect flows: thin wrappers over tasks that add parameters, ordering, retries, artifacts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

PLAIN = (str, int, float, bool, type(None))


def flow(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`prefect.flow`, for flows whose parameters are JSON values already (strings, numbers,
    booleans, None): Prefect stores those as they are, without loading FastAPI for its JSON
    encoder (~0.25 s of every run's start). Any other value goes through Prefect's encoder."""
    return lambda fn: _plain_flow_class()(fn, **options)


@functools.cache
def _plain_flow_class() -> type:
    from prefect import Flow  # here: the parameter models import this package before Prefect loads

    class PlainParametersFlow(Flow):
        def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
            if all(type(v) in PLAIN for v in parameters.values()):  # not subclasses (enums, numpy)
                return dict(parameters)
            return super().serialize_parameters(parameters)

    return PlainParametersFlow
