#!/usr/bin/env bash
# Start/stop the project's local Prefect server and `affectflow serve` in the background.
# Usage: scripts/services.sh start|stop|status   (reads PREFECT_API_URL, AFFECTFLOW_HOME, PREFECT_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
RUN_DIR="${AFFECTFLOW_HOME:-.affectflow}/services"
mkdir -p "$RUN_DIR"
API="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
HOSTPORT="${API#http://}"; HOSTPORT="${HOSTPORT%%/*}"
HOST="${HOSTPORT%%:*}"; PORT="${HOSTPORT##*:}"

STOP_WAIT_S=${STOP_WAIT_S:-15}  # per process, from SIGTERM to SIGKILL

alive() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }
# Each service runs in its own session (setsid), so its process group holds it and whatever it
# started (flow runs of `serve`); stopping signals the whole group.
launch() { nohup setsid "$@" </dev/null & }
healthy() { curl -fsS "$API/health" >/dev/null 2>&1; }

start_server() {
  if healthy; then echo "Prefect server already up at $API"; return; fi
  echo "starting Prefect server on $HOST:$PORT (log: $RUN_DIR/server.log)"
  launch "$VENV/bin/prefect" server start --host "$HOST" --port "$PORT" >"$RUN_DIR/server.log" 2>&1
  echo $! >"$RUN_DIR/server.pid"
  for _ in $(seq 1 120); do healthy && { echo "Prefect server up: ${API%/api}"; return; }; sleep 1; done
  echo "Prefect server did not come up; see $RUN_DIR/server.log" >&2; tail -20 "$RUN_DIR/server.log" >&2; exit 1
}

start_serve() {
  if alive serve; then echo "affectflow serve already running (pid $(cat "$RUN_DIR/serve.pid"))"; return; fi
  echo "starting affectflow serve (log: $RUN_DIR/serve.log)"
  launch "$VENV/bin/affectflow" serve >"$RUN_DIR/serve.log" 2>&1
  echo $! >"$RUN_DIR/serve.pid"
  for _ in $(seq 1 120); do
    # serve prints this once its runner polls for work (deployments registered; a deployment
    # left in the database by an earlier serve says nothing about this one)
    if grep -q '^affectflow serve: ready' "$RUN_DIR/serve.log" 2>/dev/null; then echo "deployments served"; return; fi
    alive serve || { echo "affectflow serve exited; see $RUN_DIR/serve.log" >&2; tail -20 "$RUN_DIR/serve.log" >&2; exit 1; }
    sleep 1
  done
  echo "deployments did not appear; see $RUN_DIR/serve.log" >&2; exit 1
}

gone() { ! kill -0 "$1" 2>/dev/null && ! kill -0 -- "-$1" 2>/dev/null; }

# Stop one service: SIGTERM to its process group, wait up to STOP_WAIT_S for every process in it
# to exit, then SIGKILL (and say so). Reports only what happened.
stop_one() {
  local name=$1 pidfile="$RUN_DIR/$1.pid" pid
  if [ ! -f "$pidfile" ]; then echo "$name: not running"; return; fi
  pid=$(cat "$pidfile")
  if gone "$pid"; then echo "$name: not running (removed a stale pid file)"; rm -f "$pidfile"; return; fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((STOP_WAIT_S * 10))); do
    if gone "$pid"; then echo "stopped $name (pid $pid)"; rm -f "$pidfile"; return; fi
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do gone "$pid" && break; sleep 0.1; done
  echo "$name (pid $pid) did not exit within ${STOP_WAIT_S} s of SIGTERM: killed it (SIGKILL); see $RUN_DIR/$name.log" >&2
  rm -f "$pidfile"
}

stop() {
  stop_one serve    # first: it talks to the server on its way out
  stop_one server
}

case "${1:-}" in
  start) start_server; start_serve ;;
  server) start_server ;;
  stop) stop ;;
  status) healthy && echo "server: up at $API" || echo "server: down"; alive serve && echo "serve: running" || echo "serve: not running" ;;
  *) echo "usage: $0 start|server|stop|status" >&2; exit 2 ;;
esac
