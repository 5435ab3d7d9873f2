#!/bin/sh
# End-to-end tests with the official SDKs from npm (openai 6.x, @anthropic-ai/sdk) against
# `switchboard serve`.
# Usage: run.sh SWITCHBOARD_BINARY WORK_DIR [SUITE]   (SUITE: e2e.mjs, the default, or anthropic.mjs)
# Exit codes: 0 passed, 1 failed, 77 skipped (no node/npm, or the npm registry unreachable).
set -u
BIN=$1
WORK=$2
SUITE=${3:-e2e.mjs}
if ! command -v node >/dev/null 2>&1; then echo "SKIP: node not found"; exit 77; fi
if ! command -v npm >/dev/null 2>&1; then echo "SKIP: npm not found"; exit 77; fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 18 ]; then echo "SKIP: node $major is older than 18"; exit 77; fi

HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
# One install for both suites; a suite running beside the other waits for it (mkdir is atomic).
until mkdir "$WORK/.install-lock" 2>/dev/null; do sleep 1; done
trap 'rmdir "$WORK/.install-lock" 2>/dev/null' EXIT
if [ ! -f "$WORK/node_modules/openai/package.json" ] ||
   [ ! -f "$WORK/node_modules/@anthropic-ai/sdk/package.json" ] ||
   ! cmp -s "$HERE/package.json" "$WORK/package.json"; then
  cp "$HERE/package.json" "$WORK/package.json"
  if ! (cd "$WORK" && npm install --no-audit --no-fund --no-package-lock --loglevel=error); then
    rm -f "$WORK/package.json"
    echo "SKIP: npm install of the SDK packages failed (registry unreachable?)"
    exit 77
  fi
fi
rmdir "$WORK/.install-lock"
trap - EXIT
cp "$HERE"/*.mjs "$WORK/"
exec node "$WORK/$SUITE" "$BIN" "$WORK"
