"""The two kinds of failure a stage can raise.

`ItemError` is permanent: the item is bad (corrupt, unreadable, no rows, wrong columns); it is
quarantined with its reason and never retried. `TransientError` may go away on its own (a file
still being copied, a busy disk); Prefect retries it.
"""

from __future__ import annotations


class ItemError(Exception):
    """A permanent problem with one input item; `reason` is one line for users."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class TransientError(Exception):
    """A failure worth retrying."""


class SetupError(Exception):
    """The run cannot start (missing weights, bad parameters, empty source); one clear message."""
