#!/usr/bin/env bash
# Start/stop the nginx chat-completions stub used by bench/ on 127.0.0.1:$STUB_PORT.
#   bench/stub.sh start | stop | status | restart
# State (rendered config, logs, pid) lives in $STUB_DIR (default bench/.peers/nginx, gitignored).
# nginx runs in the foreground (daemon off) as a background job of this script; we record the
# master PID ourselves and only ever signal that PID. On a machine with >= 2 CPUs nginx is
# pinned to the LAST cpu, and the benchmark children pin themselves to cpu 0.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${STUB_PORT:-18090}"
DIR="${STUB_DIR:-$HERE/.peers/nginx}"
PIDFILE="$DIR/stub.pid"
URL="http://127.0.0.1:$PORT"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"

alive() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

probe() {
  python3 - "$URL" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/v1/models", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

start() {
  if alive; then echo "stub already running on $URL (pid $(cat "$PIDFILE"))"; return 0; fi
  [[ -x "$NGINX" ]] || { echo "nginx not found (apt-get install -y nginx-light)" >&2; exit 1; }
  mkdir -p "$DIR/logs" "$DIR/tmp" "$DIR/sse"
  sed "s/@PORT@/$PORT/" "$HERE/nginx.conf.in" >"$DIR/nginx.conf"
  python3 "$HERE/_sse_body.py" 256 >"$DIR/sse/256.txt"   # the streamed reply (/stream/...)
  "$NGINX" -t -q -p "$DIR/" -e "$DIR/logs/error.log" -c "$DIR/nginx.conf"
  local pin=()
  if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
    pin=(taskset -c "$(( $(nproc) - 1 ))")
  fi
  nohup "${pin[@]}" "$NGINX" -p "$DIR/" -e "$DIR/logs/error.log" -c "$DIR/nginx.conf" \
    >"$DIR/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 50); do
    if probe; then echo "stub up on $URL (nginx master pid $(cat "$PIDFILE"))"; return 0; fi
    alive || break
    sleep 0.1
  done
  echo "stub failed to start; see $DIR/logs/error.log" >&2
  tail -5 "$DIR/logs/error.log" >&2 || true
  exit 1
}

stop() {
  if ! alive; then echo "stub not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  echo "stub stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if alive; then echo "running on $URL (pid $(cat "$PIDFILE"))"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
