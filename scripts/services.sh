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

alive() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }
healthy() { curl -fsS "$API/health" >/dev/null 2>&1; }

start_server() {
  if healthy; then echo "Prefect server already up at $API"; return; fi
  echo "starting Prefect server on $HOST:$PORT (log: $RUN_DIR/server.log)"
  nohup "$VENV/bin/prefect" server start --host "$HOST" --port "$PORT" >"$RUN_DIR/server.log" 2>&1 &
  echo $! >"$RUN_DIR/server.pid"
  for _ in $(seq 1 120); do healthy && { echo "Prefect server up: ${API%/api}"; return; }; sleep 1; done
  echo "Prefect server did not come up; see $RUN_DIR/server.log" >&2; tail -20 "$RUN_DIR/server.log" >&2; exit 1
}

start_serve() {
  if alive serve; then echo "affectflow serve already running (pid $(cat "$RUN_DIR/serve.pid"))"; return; fi
  echo "starting affectflow serve (log: $RUN_DIR/serve.log)"
  nohup "$VENV/bin/affectflow" serve >"$RUN_DIR/serve.log" 2>&1 &
  echo $! >"$RUN_DIR/serve.pid"
  for _ in $(seq 1 120); do
    if curl -fsS -X POST "$API/deployments/filter" -H 'content-type: application/json' -d '{}' 2>/dev/null \
        | grep -q '"name":"default"'; then echo "deployments served"; return; fi
    alive serve || { echo "affectflow serve exited; see $RUN_DIR/serve.log" >&2; tail -20 "$RUN_DIR/serve.log" >&2; exit 1; }
    sleep 1
  done
  echo "deployments did not appear; see $RUN_DIR/serve.log" >&2; exit 1
}

stop() {
  for name in serve server; do
    if alive "$name"; then kill "$(cat "$RUN_DIR/$name.pid")" && echo "stopped $name"; fi
    rm -f "$RUN_DIR/$name.pid"
  done
}

case "${1:-}" in
  start) start_server; start_serve ;;
  server) start_server ;;
  stop) stop ;;
  status) healthy && echo "server: up at $API" || echo "server: down"; alive serve && echo "serve: running" || echo "serve: not running" ;;
  *) echo "usage: $0 start|server|stop|status" >&2; exit 2 ;;
esac
