"""End to end: a real Prefect server, `affectflow serve`, a build, then `resplit/nightly` run
through the server; the split is checked in SQL and the deployment's cron schedule is shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from warehouse import Warehouse
from warehouse.catalog import connect

pytestmark = pytest.mark.slow


def _sql(home: Path, sql: str) -> list[tuple]:
    con = connect(Warehouse(home))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_nightly_resplit_after_a_build(served: dict, shared_dir: Path) -> None:
    env, home = served, Path(served["AFFECTFLOW_HOME"])
    source = shared_dir / "data" / "openface-labelled"
    built = run_cli(["affectflow", "build-features", str(source), "--extractor", "openface-csv"], env)
    assert built.returncode == 0, built.stderr[-3000:]

    ran = run_cli(["prefect", "deployment", "run", "resplit/nightly", "--watch"], env)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    assert "Completed" in ran.stdout + ran.stderr

    runs = _sql(home, "SELECT split_id, status, strategy, group_by, units FROM split_runs "
                      "WHERE status = 'published' ORDER BY created_at DESC")
    assert runs and runs[0][1:4] == ("published", "grouped", "video")
    current = _sql(home, "SELECT DISTINCT split_id FROM current_split")
    assert current == [(runs[0][0],)]
    eligible = _sql(home, "SELECT count(DISTINCT video_id) FROM videos WHERE n_face_frames > 0")[0][0]
    assert runs[0][4] == eligible >= 433  # one unit per OpenFace image row
    parts = dict(_sql(home, "SELECT partition, count(*) FROM current_split GROUP BY partition"))
    assert set(parts) == {"pretrain", "ssl", "classifier", "finetune", "test"}
    # every labelled class of the research layout is stratified into every partition
    classes = _sql(home, "SELECT emotion, count(DISTINCT partition) FROM current_split "
                         "WHERE emotion IN ('angry', 'sad', 'happy', 'neutral') GROUP BY emotion")
    assert sorted(classes) == [("angry", 5), ("happy", 5), ("neutral", 5), ("sad", 5)]

    again = run_cli(["prefect", "deployment", "run", "resplit/nightly", "--watch"], env)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert _sql(home, "SELECT count(*) FROM split_runs WHERE status = 'published'") == [(len(runs),)]

    shown = run_cli(["affectflow", "splits", "--json"], env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["split_id"] == runs[0][0]

    inspected = run_cli(["prefect", "deployment", "inspect", "resplit/nightly"], env)
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    assert "0 2 * * *" in inspected.stdout
