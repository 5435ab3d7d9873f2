#!/bin/sh
# End-to-end test: the official `openai` npm package (6.x) against `switchboard serve`.
# Usage: run.sh SWITCHBOARD_BINARY WORK_DIR
# Exit codes: 0 passed, 1 failed, 77 skipped (no node/npm, or the npm registry unreachable).
set -u
BIN=$1
WORK=$2
if ! command -v node >/dev/null 2>&1; then echo "SKIP: node not found"; exit 77; fi
if ! command -v npm >/dev/null 2>&1; then echo "SKIP: npm not found"; exit 77; fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 18 ]; then echo "SKIP: node $major is older than 18"; exit 77; fi

HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
if [ ! -f "$WORK/node_modules/openai/package.json" ] || ! cmp -s "$HERE/package.json" "$WORK/package.json"; then
  cp "$HERE/package.json" "$WORK/package.json"
  if ! (cd "$WORK" && npm install --no-audit --no-fund --no-package-lock --loglevel=error); then
    rm -f "$WORK/package.json"
    echo "SKIP: npm install of the openai package failed (registry unreachable?)"
    exit 77
  fi
fi
cp "$HERE/e2e.mjs" "$WORK/e2e.mjs"
exec node "$WORK/e2e.mjs" "$BIN" "$WORK"
