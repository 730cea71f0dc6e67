"""The warehouse report, rendered in headless Chromium with the network cut off: every section's
text is on the page, every inline image decodes, and the page requests nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from affectflow.cli import main
from data_contracts import QUARANTINE
from tasks import predict as pr
from tasks.report import write_report
from tests.synthetic_predictions import RUN_ID, train_checkpoint
from tests.synthetic_training import COLUMNS
from warehouse import Warehouse
from warehouse.writer import rows_to_table, write_atomic

SECTIONS = ("Overview", "Items and frames per label", "Face-detection rate per video", "Feature distributions",
            "Quarantined items", "Split versions", "Training runs", "Predictions on videos")


def _frames(video_id: str, n: int, face: bool) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frames = pd.DataFrame({"video_id": video_id, "frame": np.arange(n), "face_id": 0,
                           "timestamp": np.arange(n) / 25, "success": int(face)})
    for column in COLUMNS:
        frames[column] = rng.normal(0.5, 0.3, n) if face else np.nan
    return frames


def _predict(home: Path, checkpoint: Path, video_id: str, name: str, face: bool) -> None:
    model = pr.load_model(RUN_ID, checkpoint)
    rows = pr.predict_dataframe(model, _frames(video_id, 50, face))
    write_atomic(Warehouse(home).file_for("predictions", f"{RUN_ID}.{video_id}"),
                 pr.to_contract(rows, RUN_ID, Path(f"/media/{name}")))


@pytest.fixture(scope="module")
def warehouse_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("report_home")
    checkpoint = train_checkpoint(home)
    quarantined = {"item_id": "q1", "path": "/media/broken.mp4", "stage": "extract",
                   "reason": "cannot open video: not a video file, or a codec OpenCV lacks",
                   "run_id": "r1", "quarantined_at": dt.datetime(2024, 1, 3, tzinfo=dt.UTC)}
    write_atomic(Warehouse(home).file_for("quarantine", "q1"), rows_to_table(QUARANTINE, [quarantined]))
    _predict(home, checkpoint, "newvideo01", "interview.mp4", face=True)
    _predict(home, checkpoint, "emptyroom01", "empty_room.mp4", face=False)
    return home


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (apt-get install -y chromium)")


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.2)
    raise RuntimeError("chromium did not open its DevTools port")


def _cdp(ws, method: str, params: dict | None = None, ident: list[int] = [0]) -> dict:  # noqa: B006
    ident[0] += 1
    ws.send(json.dumps({"id": ident[0], "method": method, "params": params or {}}))
    while True:
        message = json.loads(ws.recv(timeout=60))
        if message.get("id") == ident[0]:
            return message.get("result", {})


PAGE_FACTS = """JSON.stringify({
  text: document.body.innerText,
  images: Array.from(document.images).map(i => [i.complete, i.naturalWidth]),
  requests: performance.getEntriesByType('resource').map(e => e.name)})"""


def render(page: Path, tmp: Path) -> dict:
    """Open `page` in headless Chromium with every host unresolvable and a dead proxy, wait for
    the load event, and return the rendered text, image states and resource requests."""
    from websockets.sync.client import connect

    profile = tmp / "chromium-profile"
    proc = subprocess.Popen([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = _devtools_port(profile, proc)
        target = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=10).json() if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            _cdp(ws, "Page.enable")
            _cdp(ws, "Page.navigate", {"url": page.as_uri()})
            for _ in range(100):
                state = _cdp(ws, "Runtime.evaluate", {"expression": "document.readyState", "returnByValue": True})
                if state["result"]["value"] == "complete":
                    break
                time.sleep(0.1)
            facts = _cdp(ws, "Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True})
        return json.loads(facts["result"]["value"])
    finally:
        proc.terminate()
        proc.wait(20)


def test_report_renders_every_section_offline(warehouse_home: Path, tmp_path: Path) -> None:
    page = write_report(warehouse_home, tmp_path / "report.html")
    facts = render(page, tmp_path)
    text = facts["text"]
    for title in SECTIONS:
        assert title in text, title
    assert "angry\t8\t64\t64\t1" in text  # items, frames and face frames per label
    assert "bs_brow_down_left" in text  # feature statistics
    assert "cannot open video: not a video file, or a codec OpenCV lacks" in text and "broken.mp4" in text
    assert "Split s1: units per partition × class" in text
    assert f"Run {RUN_ID}: test metrics against the baselines" in text and "logreg" in text
    assert "interview.mp4 (model tiny-run)" in text
    assert "empty_room.mp4 (model tiny-run)" in text and "No face found in any frame: no predictions." in text
    # label histograms, face rate, features, then the interview's four plots
    assert len(facts["images"]) == 7 and all(done and width > 0 for done, width in facts["images"])
    assert facts["requests"] == []


def test_empty_warehouse_says_so(tmp_path: Path) -> None:
    page = write_report(tmp_path / "home", tmp_path / "report.html").read_text(encoding="utf-8")
    for text in ("No items in the warehouse yet.", "No face frames with these features yet.",
                 "No quarantined items.", "No split versions yet", "No training runs yet", "No predictions yet"):
        assert text in page, text
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_report_command(warehouse_home: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AFFECTFLOW_HOME", str(warehouse_home))
    out = tmp_path / "sub" / "r.html"
    assert main(["report", "--out", str(out)]) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", "--out", str(blocker / "r.html")]) == 2
    assert capsys.readouterr().err.startswith("affectflow: error: cannot write the report to")
