"""The whole-process benchmark's measuring and checking (not its timings): what the OS reports
for a child is the child's own, worker processes count, a run past its timeout leaves nothing
behind, and a run that loaded the wrong thing is refused instead of timed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import bench_whole_process as bench  # noqa: E402

TOUCH = "b = bytearray({mb} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"


def test_a_small_child_is_not_charged_the_parent_memory():
    # wait4 counts a child's memory from before exec: a child forked from this 300 MB process
    # would report >= 300 MB (see _common.LAUNCHER); the launcher keeps it to the child's own
    ballast = bytearray(300 * 2**20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    small = _common.run_whole([sys.executable, "-c", "pass"])
    big = _common.run_whole([sys.executable, "-c", TOUCH.format(mb=200)])
    assert small["rc"] == big["rc"] == 0
    assert small["peak_rss_mb"] < 100
    assert 200 <= big["peak_rss_mb"] < 300
    assert big["cpu_s"] > 0 and big["seconds"] >= big["cpu_s"] * 0.5


def test_worker_processes_count_in_the_peak():
    worker = TOUCH.format(mb=150) + "import time; time.sleep(1.6)"
    parent = (f"import subprocess, sys; ps = [subprocess.Popen([sys.executable, '-c', {worker!r}]) for _ in range(2)]; "
              "[p.wait() for p in ps]")
    result = _common.run_whole([sys.executable, "-c", parent])
    assert result["rc"] == 0
    assert result["maxrss_mb"] < 250  # the largest single process
    assert result["peak_rss_mb"] >= 290 and result["tree_procs"] == 3  # both workers at once


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path: Path):
    pid_file = tmp_path / "grandchild.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    started = time.monotonic()
    result = _common.run_whole([sys.executable, "-c", script], timeout=3)
    assert result["rc"] == -9 and time.monotonic() - started < 20
    grandchild = int(pid_file.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]


def test_output_and_exit_code_come_back():
    result = _common.run_whole(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result["rc"], result["stdout"], result["stderr"]) == (3, "out\n", "err\n")


SUMMARY = {"items": 3, "loaded": 3, "skipped": 0, "quarantined": 0, "frames": 3}


def _run(stdout: str, rc: int = 0) -> dict:
    return {"rc": rc, "seconds": 1.0, "stdout": stdout, "stderr": "boom"}


def test_the_last_json_summary_is_read():
    import json

    first = json.dumps(dict(SUMMARY, frames=1), indent=2)
    text = f"progress line\n{first}\nmore output {{not json\n{json.dumps(SUMMARY, indent=2)}\n"
    assert bench.summary_of(_run(text), "run") == SUMMARY


@pytest.mark.parametrize("field, value", [("loaded", 2), ("quarantined", 1), ("frames", 2), ("skipped", 1)])
def test_a_run_that_loaded_the_wrong_thing_is_refused(field: str, value: int):
    wrong = dict(SUMMARY, **{field: value})
    with pytest.raises(bench.BenchError, match=f"{field} {value}"):
        bench.expect(wrong, "build-features", items=3, loaded=3, skipped=0, quarantined=0, frames=3)
    bench.expect(SUMMARY, "build-features", items=3, loaded=3, skipped=0, quarantined=0, frames=3)


def test_a_failed_run_or_no_summary_is_refused():
    with pytest.raises(bench.BenchError, match="exit 1"):
        bench.ok_run(_run("", rc=1), "build-features")
    with pytest.raises(bench.BenchError, match="no JSON summary"):
        bench.summary_of(_run("build-features: 3 items\n"), "build-features")


def test_a_failing_row_stops_but_the_others_are_measured():
    inp = bench.Input("x", "input", Path("."), [], 1)

    def refuse(result: dict) -> dict:
        bench.ok_run(result, "false")
        return {}

    failing = bench.Row(inp, "fails", lambda: (["false"], None), refuse)
    working = bench.Row(inp, "works", lambda: (["true"], None), lambda r: {"frames": 1}, kind="baseline")
    bench.measure([failing, working], repeat=2, budget_s=100, timeout=10)
    assert failing.failure and "false failed" in failing.failure and not failing.runs
    assert len(working.runs) == 2 and working.median("seconds") < 5


def test_a_slow_row_is_not_repeated_past_its_budget():
    row = bench.Row(bench.Input("x", "input", Path("."), [], 1), "r", lambda: ([], None), lambda r: {})
    assert bench.worth_repeating(row, 10)
    row.runs = [{"seconds": 4.0}]
    assert bench.worth_repeating(row, 10)
    row.runs.append({"seconds": 4.0})
    assert not bench.worth_repeating(row, 10)


@pytest.mark.parametrize("box", [(600.0, 200.0, 760.0, 400.0), (0.0, 0.0, 80.0, 90.0), (1200.0, 650.0, 1279.0, 719.0)])
def test_face_crops_are_square_inside_the_frame(box: tuple[float, float, float, float]):
    import numpy as np

    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = 255  # the "face"
    crop = bench.face_crop(frame, box, 256)
    assert crop.shape == (256, 256, 3)
    assert crop.mean() > 255 * 0.3  # the face fills much of it, wherever it sat in the frame


def test_the_runs_import_this_checkout(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(_common.REPO)]))
    envs = bench.Envs.make()
    assert envs.base["PYTHONPATH"].split(os.pathsep) == [str(_common.REPO), "/elsewhere"]
    assert bench.check_code_measured(envs).startswith(str(_common.REPO))


def test_a_helper_between_fork_and_exec_is_not_counted_twice():
    # right after fork a helper shows its parent's whole RSS (shared copy-on-write) until exec;
    # here that window lasts 0.6 s (preexec_fn), long enough for the sampler to see it
    script = TOUCH.format(mb=200) + (
        "import subprocess, time; subprocess.run(['true'], preexec_fn=lambda: time.sleep(0.6)); time.sleep(0.3)")
    result = _common.run_whole([sys.executable, "-c", script])
    assert result["rc"] == 0
    assert 200 <= result["peak_rss_mb"] < 300


def test_the_readme_table_comes_from_a_results_file(tmp_path: Path):
    import json

    inp = bench.Input("clip", "a clip", Path("."), [], 1, frames=10)
    base = bench.Row(inp, "plain script", lambda: (["true"], None), lambda r: {"frames": 10}, kind="baseline")
    run = bench.Row(inp, "build-features, server", lambda: (["true"], None), lambda r: {"frames": 10},
                    baseline=base, targets=(bench.ratio_at_least(1e-9), bench.ratio_at_least(1e9)))
    bench.measure([base, run], repeat=1, budget_s=10, timeout=10)
    figures = bench.results([base, run], [inp], {"mode": "quick", "total_s": 60.0, "uptime_start": "load average: 1.0"})
    path = tmp_path / "whole_process.json"
    path.write_text(json.dumps({"date": "2026-12-01T00:00:00", "machine": {"cpu": "cpu", "cores": 2}, "figures": figures}))
    table = bench.markdown(path).splitlines()
    assert table[0].startswith("2026-12-01, quick mode")
    assert table[-2].startswith("| a clip | plain script | 1 |")
    assert "| build-features, server | 1 |" in table[-1] and "≥ 1e-09x: met; ≥ 1e+09x: **not met**" in table[-1]
