"""A tiny checkpoint trained on the synthetic warehouse (MediaPipe blendshape features), recorded
in `training_runs` like a real run, for the prediction, plot and report tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from tasks import evaluate as ev
from tasks import train as tr
from tests.synthetic_training import build_warehouse
from warehouse.catalog import connect

RUN_ID = "tiny-run"
CFG = tr.TrainConfig(window=4, hidden=16, epochs=3, batch_size=16, patience=50, seed=0, device="cpu")
STARTED = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)


def train_checkpoint(home: Path, run_id: str = RUN_ID) -> Path:
    """Build the synthetic warehouse under `home`, train a few epochs, write and record the
    checkpoint `<home>/runs/<run_id>/model.pt`; returns its path."""
    torch.set_num_threads(1)
    wh = build_warehouse(home, videos_per_class=8, n_frames=8)
    run_dir = home / "runs" / run_id
    con = connect(wh)
    try:
        info = tr.prepare_data(con, "s1", run_dir, CFG.window)
    finally:
        con.close()
    stages = [tr.supervised(run_dir, CFG)]
    results = ev.evaluate_run(run_dir, CFG)
    path = tr.finish_run(run_dir, CFG, results)
    row = tr.run_row(run_id, CFG, info, stages, "{}", STARTED, STARTED + dt.timedelta(minutes=1), path)
    tr.record_run(wh, row, ev.metric_rows(run_id, info["split_id"], results))
    return path
