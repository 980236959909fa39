#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, for the Postgres checkpointer tests.
#   .ci/postgres.sh install            apt-get install postgresql when no server binaries exist
#   .ci/postgres.sh start PORT DIR     initdb into DIR (as the postgres user) and start it
#   .ci/postgres.sh stop DIR           stop it (fast shutdown) and remove DIR
# The URL to export: postgresql://postgres@127.0.0.1:PORT/postgres (trust auth, loopback only).
set -euo pipefail

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  install)
    if ! bindir >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
    bindir
    ;;
  start)
    port=$2; dir=$3
    bin=$(bindir)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=$2
    bin=$(bindir) || exit 0
    if [ -d "$dir/data" ]; then as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true; fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 install | start PORT DIR | stop DIR" >&2; exit 2
    ;;
esac
