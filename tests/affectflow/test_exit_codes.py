"""Exit codes are the same for every command: 2 when it cannot start as typed (argparse, bad
values, a named input that does not exist), 1 when it started and could not finish; either way
one line on stderr, `affectflow: error: …` (argparse's usage line aside)."""

from __future__ import annotations

import pytest

from affectflow.cli import COMMANDS, main


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in COMMANDS])
def test_an_unknown_option_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--no-such-option"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()  # argparse: its usage, then one error line
    assert err[-1].startswith((f"affectflow {command}: error: ", "affectflow: error: unrecognized arguments")), err


@pytest.mark.parametrize("args, code, message", [
    (["build-features", "{tmp}/nowhere"], 2, "source not found: {tmp}/nowhere"),
    (["build-features", "{tmp}", "--workers", "0"], 2, "bad parameters: workers: Input should be greater than"),
    (["predict", "{tmp}/nowhere.mp4"], 2, "source not found: {tmp}/nowhere.mp4"),
    (["train", "--epochs", "0"], 2, "bad parameters: epochs: Input should be greater than or equal to 1"),
    (["resplit", "--ssl-fraction", "0.5"], 2, "bad parameters: "),
    (["runs", "nope"], 2, "no training run 'nope'"),
    (["splits", "--split-id", "nope"], 2, "no split version 'nope'"),
    (["report", "--out", "{tmp}/a.csv/report.html"], 2, "cannot write the report to {tmp}/a.csv/report.html"),
    (["splits"], 1, "no published split yet"),
    (["query", "select * from no_such_table"], 1, "SQL error: Catalog Error"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_input_is_one_line_and_the_documented_code(af_home, tmp_path, capsys, monkeypatch, args, code, message):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / "a.csv").write_text("frame\n")
    assert main([a.format(tmp=tmp_path) for a in args]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"affectflow: error: {message.format(tmp=tmp_path)}"), err
