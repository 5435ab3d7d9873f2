#!/usr/bin/env bash
# Installs exactly the Debian 12 packages switchboard needs to build, test and benchmark.
# Idempotent: does nothing (and needs no root) when every package is already present.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev libsqlite3-dev sqlite3 libhiredis-dev redis-server libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  # The postgres state backend (libpq) and the private servers its tests start (initdb).
  libpq-dev postgresql-15 postgresql-client-15
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev libjemalloc-dev
  # The fuzz targets: clang with libFuzzer and the sanitizer runtimes (only recommended by clang).
  clang libclang-rt-14-dev
  # `make format-check` (part of `make test`) and `make format`.
  clang-format
  # The web console's browser test (tests/ui; playwright-core from npm, with the machine's Node.js).
  chromium
)

# `--bench` adds what bench/load.sh needs (wrk and nginx), which `make test` does not.
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(wrk nginx-light curl)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-deps: missing packages (${missing[*]}) and not root; rerun as root or install them with sudo" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# Tests start private PostgreSQL servers; the package's own cluster would only sit there.
if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  $SUDO mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$SUDO apt-get update -qq
# --no-install-recommends keeps Boost 1.74's libboost-dev from being pulled in beside 1.81.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

if dpkg-query -W -f='${Status}' libboost-dev 2>/dev/null | grep -q "install ok installed"; then
  echo "install-deps: warning: libboost-dev (Boost 1.74) is installed beside 1.81; remove it" >&2
fi
