"""Failpoints: named places where a test (or an operator rehearsing a failure) can inject one.

Off unless `AFFECTFLOW_FAILPOINTS` is set, e.g. `frames-written@clip.mp4=kill` or
`extract-item=transient:2,flow-end=error:1`. Actions: `kill` (SIGKILL this process, as the OOM
killer or a power cut would), `transient:N` (raise `TransientError` the first N times),
`error:N` (raise `RuntimeError` the first N times), `sleep:S` (wait S seconds, as a slow item
would). `@text` limits a failpoint to items whose
path contains `text`. Counting is per process, so a retried task sees the count go down.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

from tasks.errors import TransientError

ENV = "AFFECTFLOW_FAILPOINTS"
_hits: Counter[str] = Counter()
_lock = threading.Lock()


def _rules() -> list[tuple[str, str, str, int]]:
    rules = []
    for part in filter(None, (p.strip() for p in os.environ.get(ENV, "").split(","))):
        where, _, action = part.partition("=")
        name, _, match = where.partition("@")
        kind, _, count = action.partition(":")
        rules.append((name, match, kind, int(count or 1)))
    return rules


def failpoint(name: str, path: object = "") -> None:
    """Do nothing, unless a rule names this failpoint (and matches `path`)."""
    if ENV not in os.environ:
        return
    for rule_name, match, kind, count in _rules():
        if rule_name != name or (match and match not in str(path)):
            continue
        key = f"{rule_name}@{match}"
        with _lock:
            _hits[key] += 1
            hit = _hits[key]
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "sleep":
            time.sleep(count)
        if kind == "transient" and hit <= count:
            raise TransientError(f"injected transient failure at {name} ({hit}/{count})")
        if kind == "error" and hit <= count:
            raise RuntimeError(f"injected failure at {name} ({hit}/{count})")
