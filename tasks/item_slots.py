"""Per-item exclusion across machines that share only an object-store warehouse.

The per-item `flock` (`tasks.load.item_lock`) keeps apart the processes of one machine. Workers
on several machines meet only at the Prefect server, so there an item also takes a slot of a
Prefect global concurrency limit. One limit per item would leave thousands of limits on the
server; instead the item's key picks one of `STRIPES` limits of one slot each
(`affectflow-item-00` … `-63`, created on first use and shown in the UI under Concurrency).
Two different items that share a stripe wait for each other, which costs time, never
correctness. Slots are leased: a worker that dies frees its slot when the lease ends
(`LEASE_S`, renewed while the item runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

from tasks.errors import TransientError

STRIPES = 64
PREFIX = "affectflow-item-"
LEASE_S = 300
TRY_S = 1.0  # how long a non-blocking caller waits for a slot
_created: set[str] = set()


def stripe(key: str) -> str:
    return f"{PREFIX}{int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % STRIPES:02d}"


def server_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _ensure_limit(name: str) -> None:
    if name in _created:
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    _created.add(name)


@contextmanager
def item_slot(key: str, blocking: bool = True) -> Iterator[bool]:
    """Hold this item's stripe slot; yields False when `blocking` is off and the slot is taken.
    Without a Prefect server (`PREFECT_API_URL` unset) there is nothing to meet at: yields True."""
    if not server_url():
        yield True
        return
    from prefect.concurrency.sync import concurrency

    name = stripe(key)
    with ExitStack() as stack:
        try:
            _ensure_limit(name)
            stack.enter_context(concurrency(name, occupy=1, timeout_seconds=None if blocking else TRY_S,
                                            lease_duration=LEASE_S, strict=True))
        except TimeoutError:
            yield False
            return
        except Exception as exc:  # the server is down, unreachable or was reset: retry the item later
            _created.discard(name)  # (a reset server lost the limit: make it again on the retry)
            raise TransientError(f"could not take the item slot {name} on the Prefect server: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        yield True


@contextmanager
def item_slots(keys: set[str]) -> Iterator[None]:
    """The slots of the distinct stripes of `keys`, taken in sorted order and held together (a
    shard's members share stripes; taking one twice would wait on itself)."""
    with ExitStack() as stack:
        for name in sorted({stripe(k) for k in keys}):
            stack.enter_context(_stripe_slot(name))
        yield


@contextmanager
def _stripe_slot(name: str) -> Iterator[None]:
    if not server_url():
        yield
        return
    from prefect.concurrency.sync import concurrency

    try:
        _ensure_limit(name)
        ctx = concurrency(name, occupy=1, timeout_seconds=None, lease_duration=LEASE_S, strict=True)
        ctx.__enter__()
    except Exception as exc:
        _created.discard(name)
        raise TransientError(f"could not take the item slot {name} on the Prefect server: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    try:
        yield
    finally:
        ctx.__exit__(None, None, None)
