"""kill -9 of `train` and `resplit` processes: training resumes from its last epoch; a resplit
killed mid-publish never becomes current."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import BIN
from tests.synthetic_training import build_warehouse
from warehouse import Warehouse
from warehouse.query import run_query

pytestmark = pytest.mark.slow


def _env(home, api, failpoints=""):
    env = dict(os.environ, AFFECTFLOW_HOME=str(home), PREFECT_API_URL=api["PREFECT_API_URL"])
    if failpoints:
        env["AFFECTFLOW_FAILPOINTS"] = failpoints
    else:
        env.pop("AFFECTFLOW_FAILPOINTS", None)
    return env


def q(home, sql):
    return run_query(Warehouse(home), sql).to_pylist()


def test_killed_training_resumes_from_its_last_epoch(tmp_path, prefect_server):
    home = tmp_path / "home"
    build_warehouse(home, videos_per_class=8, n_frames=8)
    # one model (the default ensemble trains 5 on folds, each resumable the same way: tests/tasks/test_train.py)
    args = [str(BIN / "affectflow"), "train", "--epochs", "5", "--no-pretrain", "--no-pseudo-labels",
            "--no-finetune", "--window", "4", "--patience", "50", "--ensemble", "1", "--no-select-regularisation",
            "--json"]
    killed = subprocess.run(args, env=_env(home, prefect_server, "train-epoch@supervised:3=kill"),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_dir,) = (home / "runs").iterdir()
    assert (run_dir / "supervised_last.pt").exists() and not (run_dir / "model.pt").exists()
    resumed = subprocess.run([*args, "--resume", run_dir.name], env=_env(home, prefect_server),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["run_id"] == run_dir.name and (run_dir / "model.pt").exists()
    (stage,) = [s for s in summary["stages"] if s["stage"] == "supervised"]
    assert stage["epochs_run"] == 5  # 3 before the kill + 2 after, not 5 more
    assert q(home, f"select count(*) n from training_runs where run_id = '{run_dir.name}' and status = 'completed'") == [{"n": 1}]


def test_killed_resplit_never_becomes_current(tmp_path, prefect_server):
    home = tmp_path / "home"
    build_warehouse(home, videos_per_class=12, n_frames=4, publish=False)
    args = [str(BIN / "affectflow"), "resplit", "--json"]
    killed = subprocess.run(args, env=_env(home, prefect_server, "split-written=kill"),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert q(home, "select count(*) n from current_split") == [{"n": 0}]
    assert q(home, "select count(*) n from split_runs where status = 'published'") == [{"n": 0}]
    rerun = subprocess.run(args, env=_env(home, prefect_server), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    (current,) = q(home, "select distinct split_id from current_split")
    assert q(home, f"select count(*) n from splits where split_id = '{current['split_id']}'")[0]["n"] > 0
