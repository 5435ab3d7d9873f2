#!/usr/bin/env bash
# Gateway load test, side by side in one run (DESIGN.md "Performance notes"):
#   (a) a static upstream: nginx answering `return 200` with a fixed chat completion,
#   (b) nginx as a plain reverse proxy to (a)      — the floor we compare against,
#   (c) switchboard to (a) (one key, no limits, access log off).
# Prints requests/s and latency percentiles from wrk, the ratios (c)/(b), and switchboard's RSS
# with 1000 open connections. Everything listens on 127.0.0.1 only and stops by itself.
#
# Environment: DURATION (10s), CONNS (64), WRK_THREADS (2), WORKERS (2: nginx workers and
# switchboard threads), ROUNDS (3: nginx/switchboard pairs, alternating order; ratios are the
# medians of the rounds'), SWITCHBOARD (binary, default build/switchboard), RSS_REQUESTS (0: skip
# the long flat-memory run; e.g. 1000000 to check RSS stays flat over 1M requests).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SWITCHBOARD:-$root/build/switchboard}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WORKERS=${WORKERS:-2}
RSS_REQUESTS=${RSS_REQUESTS:-0}
ROUNDS=${ROUNDS:-3}
P_STATIC=18501
P_NGINX=18502
P_SB=18503

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  bash "$root/scripts/install-deps.sh" --bench
fi
[ -x "$bin" ] || { echo "load.sh: $bin not built (run make build)" >&2; exit 2; }

work=$(mktemp -d)
sb_pid=""
cleanup() {
  [ -n "$sb_pid" ] && kill "$sb_pid" 2>/dev/null && wait "$sb_pid" 2>/dev/null || true
  nginx -c "$work/nginx.conf" -p "$work" -s stop 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
escaped=${completion//\"/\\\"}
mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream static_upstream { server 127.0.0.1:$P_STATIC; keepalive 256; }
  server {
    listen 127.0.0.1:$P_STATIC reuseport;
    location / { default_type application/json; return 200 "$escaped"; }
  }
  server {
    listen 127.0.0.1:$P_NGINX reuseport;
    location / {
      proxy_pass http://static_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"

cat > "$work/switchboard.yaml" <<CONF
listen: 127.0.0.1:$P_SB
server: { threads: $WORKERS }
state: { path: $work/bench.db }
log: { level: warn, access_log: false }
providers:
  up: { kind: openai, base_url: "http://127.0.0.1:$P_STATIC/v1", keys: [bench-key] }
models:
  bench-model: { provider: up }
CONF
"$bin" serve --config "$work/switchboard.yaml" > "$work/switchboard.log" 2>&1 &
sb_pid=$!

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":32}'
LUA

for p in $P_STATIC $P_NGINX $P_SB; do
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$p/" && break
    sleep 0.05
  done
done

run() {  # name port → "rps p50 p99"
  local out
  out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "http://127.0.0.1:$2/v1/chat/completions")
  echo "$out" > "$work/wrk-$1.txt"
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  echo "$rps $p50 $p99 ${non2xx:-0}"
}

to_us() {  # wrk latency (e.g. 1.23ms, 850.00us, 1.2s) → microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm-up, then the measured runs: the static upstream once, then nginx and switchboard in
# ROUNDS rounds, alternating which goes first. The verdict uses medians (this machine is shared
# and noisy; one run can be off by 20% either way).
DURATION=2s run warm $P_SB >/dev/null
read -r s_rps s_p50 s_p99 s_err < <(run static $P_STATIC)
printf '\n%-28s %12s %10s %10s %8s\n' "target" "req/s" "p50" "p99" "non-2xx"
printf '%-28s %12s %10s %10s %8s\n' "static upstream (nginx)" "$s_rps" "$s_p50" "$s_p99" "$s_err"
n_all="" w_all="" np_all="" wp_all="" ratio_all="" p99ratio_all=""
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then
    read -r n_rps n_p50 n_p99 n_err < <(run nginx $P_NGINX)
    read -r w_rps w_p50 w_p99 w_err < <(run switchboard $P_SB)
  else
    read -r w_rps w_p50 w_p99 w_err < <(run switchboard $P_SB)
    read -r n_rps n_p50 n_p99 n_err < <(run nginx $P_NGINX)
  fi
  printf '%-28s %12s %10s %10s %8s\n' "nginx reverse proxy #$r" "$n_rps" "$n_p50" "$n_p99" "$n_err"
  printf '%-28s %12s %10s %10s %8s\n' "switchboard #$r" "$w_rps" "$w_p50" "$w_p99" "$w_err"
  n_all+=" $n_rps" w_all+=" $w_rps"
  np_all+=" $(to_us "$n_p99")" wp_all+=" $(to_us "$w_p99")"
  ratio_all+=" $(awk -v a="$w_rps" -v b="$n_rps" 'BEGIN { printf "%.3f", a / b }')"
  p99ratio_all+=" $(awk -v a="$(to_us "$w_p99")" -v b="$(to_us "$n_p99")" 'BEGIN { printf "%.3f", a / b }')"
done
printf '\nmedians over %d rounds: nginx proxy %.0f req/s p99 %.2f ms, switchboard %.0f req/s p99 %.2f ms\n' \
  "$ROUNDS" "$(median <<<"$n_all")" "$(awk -v v="$(median <<<"$np_all")" 'BEGIN { print v / 1000 }')" \
  "$(median <<<"$w_all")" "$(awk -v v="$(median <<<"$wp_all")" 'BEGIN { print v / 1000 }')"
printf 'switchboard / nginx proxy: throughput %.2f, p99 latency %.2f (medians of the per-round ratios:%s |%s)\n' \
  "$(median <<<"$ratio_all")" "$(median <<<"$p99ratio_all")" "$ratio_all" "$p99ratio_all"
w_rps=$(median <<<"$w_all")

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status"; }

if [ "$RSS_REQUESTS" -gt 0 ]; then
  # Flat memory: RSS after the first 10% of the requests vs after all of them, at the same
  # connection count (before the 1000-connection phase, whose buffers the allocator returns only
  # gradually).
  rate=${w_rps%.*}
  secs=$(( RSS_REQUESTS / (rate > 0 ? rate : 1) + 1 ))
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"$(( secs / 10 + 1 ))s" -s "$work/post.lua" "http://127.0.0.1:$P_SB/v1/chat/completions" >/dev/null
  early=$(rss_kb)
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" -s "$work/post.lua" "http://127.0.0.1:$P_SB/v1/chat/completions" >/dev/null
  late=$(rss_kb)
  awk -v a="$early" -v b="$late" -v n="$RSS_REQUESTS" 'BEGIN { printf "RSS over ~%d requests: %d MB -> %d MB (%+.1f%%)\n", n, a/1024, b/1024, (b-a)*100/a }'
fi

before=$(rss_kb)
wrk -t"$WRK_THREADS" -c1000 -d5s -s "$work/post.lua" "http://127.0.0.1:$P_SB/v1/chat/completions" > "$work/wrk-1000.txt" &
wrk_pid=$!
sleep 4
during=$(rss_kb)
wait $wrk_pid
printf 'switchboard RSS: %d MB idle, %d MB with 1000 connections\n' $((before / 1024)) $((during / 1024))
