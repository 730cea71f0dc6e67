"""The progress bar draws count, rate and ETA on a terminal and nothing in pipes or CI."""

from __future__ import annotations

import io
import re

from tasks.progress import is_interactive, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_in_a_pipe() -> None:
    stream = io.StringIO()
    with progress_bar(10, "predict x.mp4", unit="frames", stream=stream) as bar:
        bar.advance(10)
    assert stream.getvalue() == "" and bar.completed == 10


def test_quiet_in_ci_even_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert not is_interactive(_Terminal())


def test_terminal_shows_count_rate_and_eta(monkeypatch) -> None:
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "TF_BUILD", "JENKINS_URL"):
        monkeypatch.delenv(name, raising=False)
    stream = _Terminal()
    with progress_bar(40, "predict x.mp4", unit="frames", stream=stream) as bar:
        for _ in range(4):
            bar.advance(10)
    text = stream.getvalue()
    assert "predict x.mp4" in text and "40/40" in text and "frames/s" in text and "ETA" in text


def test_unknown_total_shows_count_and_rate() -> None:
    stream = _Terminal()
    with progress_bar(None, "extract", unit="items", stream=stream, force=True) as bar:
        bar.advance(3)
    assert "3/? items" in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", stream.getvalue())
