#!/usr/bin/env bash
# Run the whole benchmark suite and print its tables (also written to bench/results/RESULTS.md).
#
#   bench/run.sh                 # full run, ~20 minutes on a 2-core machine
#   QUICK=1 bench/run.sh         # smoke run (1 repeat, small N), ~2 minutes
#   bench/run.sh client engine   # only some stages: client memory engine onion checkpoint streaming
#                                #   observer growth inflight
#   bench/run.sh distributed     # opt-in stage: the Dask fan-out executor (distributed_bench.py)
#
# Knobs: REPEATS=3 N=2000 K=500 ITEMS=10000 CALLS=1000 STEPS=200 STREAM_N=200 STUB_PORT=18090 PEERS_PYTHON=/path/python3.12
#        OBS_K=300 GROWTH_SIZES=10000,100000,1000000 WAITING_SIZES=10000,100000 MESSAGES=10,100,500,1000
#        INFLIGHT_CALLS=10000 DELAY_PORT=0 (0: any free port)
# Exit status: summary.py's (1 when a target is missed by more than the run's spread), after
# every table is printed.
# (the checkpoint stage adds a PostgreSQL row when OPENARMATURE_POSTGRES_URL is set)
#
# What it does:
#   1. creates (once) the peers virtualenv bench/.peers (gitignored) with a Python >= 3.12:
#      the peers from bench/requirements-peers.lock.txt (openai, openarmature, langgraph, aiohttp,
#      httpx, trio, ...) plus this checkout installed editable. The peers never become project
#      dependencies: the project's own .venv is not touched.
#   2. installs nginx with apt-get if it is missing (needs root), starts the stub (bench/stub.sh)
#      on 127.0.0.1:$STUB_PORT, and stops it again at the end if this script started it.
#   3. runs client_bench.py, memory_bench.py, engine_bench.py, onion_bench.py,
#      checkpoint_bench.py, streaming_bench.py, observer_bench.py, growth_bench.py and
#      memory_bench.py's 10,000-in-flight rows, each in
#      fresh child processes, prints their Markdown tables, then summary.py checks the
#      issue targets against this run's figures (and gives the exit status).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PEERS="$HERE/.peers"
OUT="${OUT:-$HERE/results}"
export STUB_PORT="${STUB_PORT:-18090}"
export STUB_URL="http://127.0.0.1:$STUB_PORT"
if [[ "${QUICK:-0}" == 1 ]]; then
  REPEATS="${REPEATS:-1}"; N="${N:-300}"; K="${K:-200}"; ITEMS="${ITEMS:-1000}"; ONION_N="${ONION_N:-500}"
  STEPS="${STEPS:-50}"; STREAM_N="${STREAM_N:-40}"; OBS_K="${OBS_K:-100}"
  GROWTH_SIZES="${GROWTH_SIZES:-10000,100000}"; WAITING_SIZES="${WAITING_SIZES:-10000}"
  MESSAGES="${MESSAGES:-10,1000}"; INFLIGHT_CALLS="${INFLIGHT_CALLS:-2000}"
fi
REPEATS="${REPEATS:-3}"; N="${N:-2000}"; K="${K:-500}"; ITEMS="${ITEMS:-10000}"
CALLS="${CALLS:-1000}"; ONION_N="${ONION_N:-3000}"; STEPS="${STEPS:-200}"; STREAM_N="${STREAM_N:-200}"
OBS_K="${OBS_K:-300}"
GROWTH_SIZES="${GROWTH_SIZES:-10000,100000,1000000}"; WAITING_SIZES="${WAITING_SIZES:-10000,100000}"
MESSAGES="${MESSAGES:-10,100,500,1000}"; INFLIGHT_CALLS="${INFLIGHT_CALLS:-10000}"
STAGES=("$@"); [[ ${#STAGES[@]} -eq 0 ]] && \
  STAGES=(client memory engine onion checkpoint streaming observer growth inflight)

log() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

# ---------------------------------------------------------------- 1. peers virtualenv
find_python() {
  local c
  for c in "${PEERS_PYTHON:-}" python3.12 python3.13; do
    [[ -n "$c" ]] && command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
      && { command -v "$c"; return 0; }
  done
  for c in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.1[23]*/bin/python; do
    [[ -x "$c" ]] && { echo "$c"; return 0; }
  done
  return 1
}

if [[ ! -x "$PEERS/bin/python" ]]; then
  PY="$(find_python)" || { echo "need a Python >= 3.12 for the peers (openarmature); set PEERS_PYTHON" >&2; exit 1; }
  log "creating peers virtualenv $PEERS with $PY"
  "$PY" -m venv "$PEERS"
fi
stamp="$(cat "$HERE/requirements-peers.lock.txt" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ "$(cat "$PEERS/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  log "installing peers + this checkout (editable) into $PEERS"
  "$PEERS/bin/python" -m pip install -q -r "$HERE/requirements-peers.lock.txt"
  "$PEERS/bin/python" -m pip install -q -e "$REPO[test]"   # [test]: opentelemetry-sdk for onion_bench, psycopg for checkpoint_bench
  echo "$stamp" >"$PEERS/.stamp"
fi
PY="$PEERS/bin/python"

# ---------------------------------------------------------------- 2. nginx stub
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing nginx (apt-get)"
    apt-get update -qq && (apt-get install -y -qq nginx-light || apt-get install -y -qq nginx) >/dev/null
  else
    echo "nginx is missing: install it (apt-get install nginx-light) and rerun" >&2; exit 1
  fi
fi
started=0
if ! "$HERE/stub.sh" status >/dev/null 2>&1; then "$HERE/stub.sh" start >&2; started=1; fi
cleanup() { if [[ $started == 1 ]]; then "$HERE/stub.sh" stop >&2; fi; }
trap cleanup EXIT

# ---------------------------------------------------------------- 3. benchmarks
mkdir -p "$OUT"
{
  echo "# bench/ results"
  echo
  echo "Run $(date '+%F %T'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs));"\
       "$(nginx -v 2>&1 | cut -d' ' -f3); repeats=$REPEATS. Children pinned to CPU 0, servers to the last CPU."
  echo
} >"$OUT/RESULTS.md"

stage() {  # stage NAME SECONDS CMD...
  local name="$1" secs="$2"; shift 2
  log "$name"
  if timeout "$secs" "$@" --json "$OUT/$name.json" >"$OUT/$name.md"; then :; else
    echo "stage $name failed (rc=$?)" | tee -a "$OUT/$name.md" >&2
  fi
  cat "$OUT/$name.md"; echo
  { cat "$OUT/$name.md"; echo; } >>"$OUT/RESULTS.md"
}

for s in "${STAGES[@]}"; do
  case "$s" in
    client) stage client 480 "$PY" "$HERE/client_bench.py" --n "$N" --c 1,32 --repeats "$REPEATS" ;;
    memory) stage memory 300 "$PY" "$HERE/memory_bench.py" --calls "$CALLS" ;;
    engine) stage engine 400 "$PY" "$HERE/engine_bench.py" --k "$K" --items "$ITEMS" --repeats "$REPEATS" ;;
    onion)  stage onion 200 "$PY" "$HERE/onion_bench.py" --n "$ONION_N" --repeats "$REPEATS" ;;
    checkpoint) stage checkpoint 400 "$PY" "$HERE/checkpoint_bench.py" --steps "$STEPS" --repeats "$REPEATS" ;;
    streaming) stage streaming 400 "$PY" "$HERE/streaming_bench.py" --n "$STREAM_N" --repeats "$REPEATS" ;;
    observer) stage observer 600 "$PY" "$HERE/observer_bench.py" --k "$OBS_K" --repeats "$REPEATS" ;;
    growth) stage growth 1200 "$PY" "$HERE/growth_bench.py" --sizes "$GROWTH_SIZES" \
              --waiting-sizes "$WAITING_SIZES" --messages "$MESSAGES" --repeats "$REPEATS" ;;
    # 10,000 calls on one provider against the 300 ms delay server, backpressure limit on / off
    inflight) stage inflight 900 "$PY" "$HERE/memory_bench.py" --calls "$INFLIGHT_CALLS" \
                --only ours_bp_on,ours_bp_off --repeats "$REPEATS" --timeout 240 ;;
    # opt-in (not in the default list): starts Dask LocalClusters of 1 and 2 workers
    distributed) stage distributed 400 "$PY" "$HERE/distributed_bench.py" --repeats "$REPEATS" ;;
    *) echo "unknown stage $s (client memory engine onion checkpoint streaming observer growth inflight distributed)" >&2; exit 2 ;;
  esac
done
log "targets"
rc=0
"$PY" "$HERE/summary.py" "$OUT" | tee -a "$OUT/RESULTS.md" || rc=$?
log "tables written to $OUT/RESULTS.md"
exit "$rc"
