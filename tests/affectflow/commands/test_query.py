"""`affectflow query`: what it loads, how its output streams, and its output formats."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from affectflow.cli import main
from tests.conftest import REPO
from warehouse import Warehouse
from warehouse.catalog import views_for
from warehouse.query import open_query

HEAVY = ("pandas", "pyarrow", "numpy", "fsspec", "prefect", "torch", "matplotlib", "great_expectations", "cv2")


def _fresh_process(tmp_path, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AFFECTFLOW_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_query_and_help_load_no_heavy_library(tmp_path):
    """`affectflow query "select 1"` on an existing warehouse needs DuckDB alone, `--help` not
    even that: each library below costs 0.1-2 s of start-up (a query took 1.5-5 s before). (A
    fresh home's first query writes the tables' schema files, with pyarrow.)"""
    Warehouse(tmp_path / "home").init()
    loaded = f"import sys; print(' '.join(m for m in {HEAVY} + ('duckdb',) if m in sys.modules), file=sys.stderr)"
    query = _fresh_process(tmp_path, "from affectflow.cli import main\n"
                           "main(['query', 'select 1 a, null b']); main(['query', 'select count(*) n from videos']); "
                           + loaded)
    assert query.returncode == 0, query.stderr
    assert query.stdout.split() == ["a", "b", "1", "NULL", "n", "0"]
    assert query.stderr.split() == ["duckdb"]
    help_ = _fresh_process(tmp_path, "from affectflow.cli import build_parser\nbuild_parser().format_help(); " + loaded)
    assert help_.returncode == 0 and help_.stderr.split() == [], help_.stderr


def test_a_query_builds_only_the_views_it_names(tmp_path):
    wh = Warehouse(tmp_path).init()
    assert views_for(wh, "select count(*) from videos v join labels using (video_id)") == {"videos", "labels"}
    assert views_for(wh, "select * from current_split") == {"current_split", "splits", "split_runs"}
    assert views_for(wh, 'select * from "Quarantine"') == {"quarantine"}
    for catalog in ("show tables", "describe", "select * from information_schema.tables",
                    "select view_name from duckdb_views()"):
        assert views_for(wh, catalog) is None, catalog  # every view
    with open_query(wh, "select table_name from information_schema.tables order by 1") as result:
        names = [r["table_name"] for batch in result for r in batch.to_pylist()]
    assert {"frames", "videos", "video_summary", "current_split", "run_summary"} <= set(names)


def test_results_stream_in_batches(tmp_path):
    wh = Warehouse(tmp_path).init()
    with open_query(wh, "select i from range(10000) t(i)", batch_rows=1000) as result:
        sizes = [batch.num_rows for batch in result]
    assert len(sizes) >= 10 and sum(sizes) == 10000


def test_json_and_csv_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AFFECTFLOW_HOME", str(tmp_path / "home"))
    sql = "select i, i / 2 half, case when i % 2 = 0 then 'even, ok' end word from range(3) t(i)"
    assert main(["query", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"i": 0, "half": 0.0, "word": "even, ok"},
                                                   {"i": 1, "half": 0.5, "word": None},
                                                   {"i": 2, "half": 1.0, "word": "even, ok"}]
    assert main(["query", "select 1 a where false", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    out = tmp_path / "q.csv"
    assert main(["query", sql, "--format", "csv", "-o", str(out)]) == 0
    assert list(csv.reader(out.open())) == [["i", "half", "word"], ["0", "0", "even, ok"], ["1", "0.5", ""],
                                            ["2", "1", "even, ok"]]


def test_table_output_counts_the_rows_it_does_not_show(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AFFECTFLOW_HOME", str(tmp_path / "home"))
    assert main(["query", "select i, 2009.5335108778058::double x from range(1000) t(i)"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["i", "x"] and lines[1].split() == ["0", "2009.53"]  # rounded for reading
    assert len(lines) == 202 and lines[-1].startswith("… 800 more rows")


def test_a_big_csv_export_keeps_memory_flat(tmp_path):
    """2M rows of 100-character text (~200 MB of CSV): streamed, it peaks near 190 MB; with the
    whole result in memory it peaked at 454 MB into a file and 1.3 GB to standard output (Arrow,
    then pandas, then the CSV text)."""
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a child of a big pytest
    # process would report the parent's size; VmHWM belongs to the new program's memory only
    code = ("from affectflow.cli import main\n"
            "rc = main(['query', \"select i, repeat('x', 100) || i s from range(2000000) t(i)\", "
            "'--format', 'csv', '-o', '/dev/null'])\n"
            "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
            "print(rc, int(hwm.split()[1]) // 1024)")
    done = _fresh_process(tmp_path, code)
    assert done.returncode == 0, done.stderr
    rc, peak_mb = map(int, done.stdout.split())
    assert rc == 0 and peak_mb < 300, f"peak RSS {peak_mb} MB"


@pytest.mark.parametrize("args, code, message", [
    (["query", "selec 1"], 1, "SQL error"),
    (["query", "drop view videos"], 1, "refused: DROP"),
    (["query", "select 1", "--format", "parquet"], 2, "--format parquet needs --output FILE"),
    (["query", "select 1", "--timeout", "0"], 2, "--timeout must be positive"),
    (["query", "select 1", "-o", "/nonexistent/folder/x.txt"], 1, "cannot write /nonexistent/folder/x.txt"),
])
def test_errors_are_one_line_with_the_right_exit_code(tmp_path, monkeypatch, capsys, args, code, message):
    monkeypatch.setenv("AFFECTFLOW_HOME", str(tmp_path / "home"))
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
