#!/usr/bin/env bash
# Starts a private Redis on 127.0.0.1:6390 and three gateways on ports 8401-8403 that share every
# key's limits through it. Ctrl-C stops them all. Needs `make build` (and redis-server, which
# scripts/install-deps.sh installs).
set -euo pipefail
cd "$(dirname "$0")"
BIN=../../build/switchboard
WORK=$(mktemp -d /tmp/switchboard-cluster-XXXXXX)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  --logfile "$WORK/redis.log" &
pids+=($!)
for i in 1 2 3; do
  SWITCHBOARD__STATE__PATH="$WORK/gateway-$i.db" \
    "$BIN" serve --config switchboard.yaml --listen "127.0.0.1:840$i" 2>"$WORK/gateway-$i.log" &
  pids+=($!)
done
sleep 1
for i in 1 2 3; do
  echo "gateway $i: http://127.0.0.1:840$i  readyz: $(curl -s "127.0.0.1:840$i/readyz")"
done
echo "logs in $WORK; Ctrl-C stops everything"
wait
