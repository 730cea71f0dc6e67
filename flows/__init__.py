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

    _heartbeats_left_to_stop()

    class PlainParametersFlow(Flow):
        def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
            if all(type(v) in PLAIN for v in parameters.values()):  # not subclasses (enums, numpy)
                return dict(parameters)
            return super().serialize_parameters(parameters)

    return PlainParametersFlow


def _heartbeats_left_to_stop() -> None:
    """A sync flow run's end waits for its heartbeat thread, which sleeps in 1 s steps: 0-1 s
    (0.5 s on average) added to every run. Prefect's async engine leaves the thread to stop on
    its own (`join_on_exit=False`: it is a daemon, told to stop, and sends nothing more); sync
    runs here do the same. Skipped where Prefect has no such function (another version)."""
    from contextlib import contextmanager

    from prefect import flow_engine

    sending = getattr(flow_engine, "_send_heartbeats", None)
    if sending is None or hasattr(sending, "prefects"):
        return

    @contextmanager
    def send_heartbeats(engine: Any, join_on_exit: bool = True):  # noqa: ARG001 (never joined)
        with send_heartbeats.prefects(engine, join_on_exit=False):  # type: ignore[attr-defined]
            yield

    send_heartbeats.prefects = sending  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats
