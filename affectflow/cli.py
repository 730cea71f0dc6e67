"""The `affectflow` command line. Each subcommand lives in `affectflow/commands/<name>.py` and
exposes `register(subparsers)`; the handler returns the process exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMANDS = ("build_features", "query", "serve", "demo", "warehouse", "resplit", "splits", "train", "runs",
            "models", "predict", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectflow",
        description="Face videos and images -> validated affect features in a DuckDB/Parquet "
        "warehouse, stratified splits, and multitask models, as Prefect flows.",
        epilog="Settings come from AFFECTFLOW_* environment variables; see README.md.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"affectflow.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"affectflow.commands.{name}":
                continue  # a command not installed in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # nor the SDK's telemetry (the Makefile turns analytics off too)
    # Without PREFECT_API_URL, Prefect starts a temporary server and gives it 20 s, which a
    # busy machine misses ("Timed out while attempting to connect to ephemeral Prefect API server")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    args_seen = sys.argv[1:] if argv is None else argv
    if not {"-v", "--verbose"} & set(args_seen) and "serve" not in args_seen:
        # Commands report progress and errors themselves, one line each. Prefect's console
        # output (and its tracebacks for a failed run) appears with -v; its logs still go to the
        # Prefect server, so the UI shows every run's log.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose and args.command != "serve":  # libraries' records propagate to this handler too
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:  # ours from basicConfig, not a host's (e.g. pytest)
                handler.setLevel(logging.CRITICAL)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `affectflow query … | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if not _storage_error(exc):
            raise
        from affectflow.settings import load_settings

        where = load_settings().warehouse_url or "the warehouse"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"affectflow: error: cannot reach {where}: {type(exc).__name__}: {first}\n"
              "  check AFFECTFLOW_WAREHOUSE_URL and the object store's credentials and endpoint "
              "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)", file=sys.stderr)
        return 1


def entry() -> None:
    """The `affectflow` console script: `main`, then a quick exit. Once a command has returned,
    everything it wrote is closed and flushed; what remains is the interpreter tearing down
    MediaPipe, Great Expectations and Prefect module by module, ~2 s measured after a
    build-features run. So: the exit handlers (Prefect's, weakref finalizers, temporary
    folders), then the logs and standard streams, then `os._exit`. An uncaught exception takes
    Python's ordinary exit (traceback, cleanup) instead."""
    _cap_malloc_arenas()
    code = main()
    import atexit
    import contextlib
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter's exit does first: join threads
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: the reader left; nothing more to say
            stream.flush()
    os._exit(code)


MALLOC_ARENAS = "2"
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _cap_malloc_arenas() -> None:
    """At most two glibc heap arenas, for this process and the ones it starts (validation
    worker, flow runs of `affectflow serve`). glibc gives threads that allocate at once arenas
    of their own, up to eight per core, and memory freed in one is not reused by another: with
    two extractor threads, their decoders and MediaPipe's, a 1,330-image build peaked 30 MB
    higher (662 vs 632 MB, benchmarks/bench_whole_process.py). A MALLOC_ARENA_MAX the user set
    is left alone; elsewhere than glibc this does nothing."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = MALLOC_ARENAS
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, int(MALLOC_ARENAS))
    except (OSError, AttributeError):
        pass


def _storage_error(exc: BaseException) -> bool:
    """An object store refusing or unreachable (botocore, s3fs, aiohttp), anywhere in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__module__.split(".")[0] in {"botocore", "aiobotocore", "s3fs", "aiohttp", "gcsfs", "adlfs"}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
