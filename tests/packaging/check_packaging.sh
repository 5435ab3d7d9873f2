#!/usr/bin/env bash
# Packaging checks (issue 29), run by CTest: the systemd unit verifies, the Dockerfile builds when a
# Docker daemon with the base image is at hand and is linted otherwise, and `cmake --install`
# lays out what the unit and the image expect.
#   check_packaging.sh SOURCE_DIR BUILD_DIR SWITCHBOARD_BINARY
set -euo pipefail
src=$1 build=$2 bin=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check_packaging: $*" >&2; exit 1; }

# --- systemd unit ---------------------------------------------------------------------------
unit=$src/packaging/switchboard.service
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$unit" || fail "unit: reload is not SIGHUP"
grep -q '^NoNewPrivileges=yes$' "$unit" || fail "unit: NoNewPrivileges missing"
grep -q '^ProtectSystem=strict$' "$unit" || fail "unit: ProtectSystem=strict missing"
grep -Eq '^(DynamicUser=yes|User=)' "$unit" || fail "unit: runs as root"
nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
max_conn=$("$bin" check-config "$src/examples/switchboard.yaml" 2>/dev/null | sed -n 's/.*max_connections: \([0-9]*\).*/\1/p' | head -1)
[ -n "$max_conn" ] && [ "$nofile" -gt "$max_conn" ] || fail "unit: LimitNOFILE ($nofile) not above max_connections ($max_conn)"
if command -v systemd-analyze >/dev/null; then
  # verify resolves ExecStart: point it at the binary just built. It exits 0 on mere warnings,
  # so any output at all is a failure.
  sed "s#/usr/local/bin/switchboard#$bin#" "$unit" > "$work/switchboard.service"
  out=$(systemd-analyze verify "$work/switchboard.service" 2>&1) || fail "systemd-analyze: $out"
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
  echo "unit: systemd-analyze verify clean"
else
  echo "unit: systemd-analyze not installed; static checks only"
fi

# --- Dockerfile -------------------------------------------------------------------------------
df=$src/Dockerfile
if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1 &&
   timeout 10 docker image inspect debian:12 >/dev/null 2>&1; then
  docker build -q -t switchboard-ci-check "$src" >/dev/null || fail "docker build failed"
  docker run --rm --entrypoint /usr/local/bin/switchboard switchboard-ci-check --version
  echo "Dockerfile: built"
else
  # Lint: two stages, a non-root user, a health check on /healthz, state in a volume, every
  # COPY source present, and every package it installs known to apt on Debian 12.
  [ "$(grep -c '^FROM debian:12' "$df")" -ge 2 ] || fail "Dockerfile: not multi-stage on Debian 12"
  grep -Eq '^USER [a-z]' "$df" && ! grep -Eq '^USER (root|0)' "$df" || fail "Dockerfile: runs as root"
  grep -q '^HEALTHCHECK .*' "$df" && grep -q '/healthz' "$df" || fail "Dockerfile: no HEALTHCHECK on /healthz"
  grep -q '^VOLUME ' "$df" || fail "Dockerfile: no volume for state"
  grep -q '^EXPOSE 8400' "$df" || fail "Dockerfile: port not exposed"
  while read -r from; do
    [ -e "$src/$from" ] || fail "Dockerfile: COPY source $from missing"
  done < <(grep '^COPY ' "$df" | grep -v -- '--from=' | awk '{print $2}' | grep -v '^\.$')
  # Packages of the apt-get install lines (continuation lines joined).
  pkgs=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$df" | grep 'apt-get install' |
    sed 's/.*--no-install-recommends//; s/&&.*//' | tr ' ' '\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | sort -u)
  [ -n "$pkgs" ] || fail "Dockerfile: no packages found"
  if command -v apt-cache >/dev/null; then
    for p in $pkgs; do
      apt-cache show "$p" >/dev/null 2>&1 || fail "Dockerfile: package $p unknown to apt"
    done
  fi
  # The runtime stage names the package of every library the binary links directly (their own
  # dependencies come with them).
  runtime=$(sed -n '/^FROM debian:12-slim/,$p' "$df")
  for soname in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    lib=$(ldconfig -p | awk -v s="$soname" '$1 == s && !found {print $NF; found = 1}')
    [ -n "$lib" ] || fail "Dockerfile: cannot resolve $soname"
    pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | cut -d: -f1 | head -1 || true)
    [ -n "$pkg" ] || pkg=$(dpkg -S "$lib" 2>/dev/null | cut -d: -f1 | head -1 || true)
    case "$pkg" in
      "" | libc6 | libgcc-s1 | libstdc++6) continue ;;  # in every Debian image
      libasan* | libubsan* | libtsan* | liblsan* | libclang-rt*) continue ;;  # sanitizer builds
    esac
    grep -qw -- "$pkg" <<<"$runtime" || fail "Dockerfile: runtime stage lacks $pkg (for $soname)"
  done
  echo "Dockerfile: linted (no Docker daemon with debian:12 here)"
fi

# --- install layout ---------------------------------------------------------------------------
cmake --install "$build" --prefix "$work/prefix" >/dev/null
[ -x "$work/prefix/bin/switchboard" ] || fail "install: no bin/switchboard"
[ -f "$work/prefix/share/switchboard/examples/switchboard.yaml" ] || fail "install: no example config"
[ -f "$work/prefix/lib/systemd/system/switchboard.service" ] || fail "install: no unit"
version=$("$work/prefix/bin/switchboard" --version)
[[ "$version" =~ ^switchboard\ [0-9]+\.[0-9]+\.[0-9]+\ \( ]] ||
  fail "install: the installed binary does not run ($version)"
echo "install: ok"
