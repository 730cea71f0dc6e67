"""The console script caps glibc's heap arenas for itself and the processes it starts, and
leaves a MALLOC_ARENA_MAX the user set alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD_SEES = ("from affectflow.cli import _cap_malloc_arenas; _cap_malloc_arenas(); import subprocess; "
              "print(subprocess.run(['sh', '-c', 'echo ${MALLOC_ARENA_MAX:-unset}'], capture_output=True, text=True).stdout.strip())")


@pytest.mark.parametrize("preset, seen", [(None, "2"), ("4", "4")])
def test_children_get_the_cap_unless_the_user_chose_one(preset, seen):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if preset is not None:
        env["MALLOC_ARENA_MAX"] = preset
    out = subprocess.run([sys.executable, "-c", CHILD_SEES], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == seen
