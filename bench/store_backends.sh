#!/usr/bin/env bash
# Outcome throughput of both store backends, side by side in one run: SQLite (the embedded
# default, synchronous=NORMAL) and PostgreSQL 15 (a private server started here on a free loopback
# port, synchronous_commit=off: like SQLite's NORMAL, a commit survives a crash of either process,
# not a power loss). Reports committed outcome rows per second from the Google Benchmark cases
# BM_StoreSustainedWrite and BM_PostgresSustainedWrite, and the latency of one durable workflow
# step transition (BM_WorkflowStepTransition[Postgres]), REPETITIONS times each, interleaved.
#
#   bash bench/store_backends.sh            # after `make build`
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-./build/switchboard_bench}
REPETITIONS=${REPETITIONS:-5}
BIN=$(pg_config --bindir)
[ -x "$BENCH" ] || { echo "build first: make build" >&2; exit 1; }

DIR=$(mktemp -d /tmp/switchboard-pgbench-XXXXXX)
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody:nogroup "$DIR"
  RUN_AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
  [ -n "${PG_PID:-}" ] && kill -QUIT "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
"${RUN_AS[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1
"${RUN_AS[@]}" "$BIN/postgres" -D "$DIR/data" -p "$PORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$DIR" -c synchronous_commit=off >"$DIR/postgres.log" 2>&1 &
PG_PID=$!
for _ in $(seq 100); do
  psql -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -c 'SELECT 1' postgres >/dev/null 2>&1 && break
  sleep 0.1
done
export SWITCHBOARD_BENCH_PG_URL="postgresql://postgres@127.0.0.1:$PORT/postgres"

"$BENCH" --benchmark_filter='BM_StoreSustainedWrite|BM_PostgresSustainedWrite|BM_WorkflowStepTransition' \
  --benchmark_repetitions="$REPETITIONS" --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true 2>&1 | grep -E 'Sustained|Transition|Benchmark|^-'
