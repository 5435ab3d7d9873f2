#!/bin/sh
# The web console's browser test (console_test.mjs) with playwright-core from npm and Debian's
# chromium (scripts/install-deps.sh installs it).
# Usage: run.sh SWITCHBOARD_BINARY WORK_DIR   (screenshots and process logs go to WORK_DIR/out)
set -eu
BIN=$1
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "FAIL: $CHROMIUM not found (scripts/install-deps.sh installs chromium)"; exit 1; }
command -v node >/dev/null 2>&1 || { echo "FAIL: node not found"; exit 1; }
mkdir -p "$WORK"
# The locked playwright-core, installed into the build tree once (again when the lock changes).
if ! cmp -s "$HERE/package-lock.json" "$WORK/package-lock.json" ||
   [ ! -f "$WORK/node_modules/playwright-core/package.json" ]; then
  cp "$HERE/package.json" "$HERE/package-lock.json" "$WORK/"
  (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error) ||
    { rm -f "$WORK/package-lock.json"; echo "FAIL: npm ci of playwright-core failed"; exit 1; }
fi
cp "$HERE/console_test.mjs" "$WORK/"
rm -rf "$WORK/out"
CHROMIUM=$CHROMIUM exec node "$WORK/console_test.mjs" "$BIN" "$WORK/out"
