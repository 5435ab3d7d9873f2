#!/usr/bin/env bash
# Gateway load test, side by side in one run, with the configuration users run (the example's
# defaults: access log on, SQLite store on):
#   (a) a static upstream: nginx answering a fixed chat completion, or a fixed SSE stream of 7
#       events for streamed requests (its own nginx instance, so that neither proxy shares
#       processes with the upstream, as no deployed proxy does),
#   (b) nginx as a plain reverse proxy to (a)      — the floor we compare against,
#   (c) switchboard to (a) (one key, no limits).
# Three scenarios, each in ROUNDS interleaved rounds (nginx and switchboard alternate who goes
# first): non-stream with CONNS connections, stream with CONNS connections, and one connection
# (the added latency: p50 through the proxy minus p50 of the upstream alone). Ratios are medians of
# the per-round ratios (this machine is shared and noisy), and the CPU time each proxy spent per
# request (user and system, from its processes' own counters: steadier than throughput on a
# shared machine, where every process competes for two cores). Then the system calls switchboard makes
# per request (strace -c over a short run of each kind), and its RSS with 1000 connections.
# Everything listens on 127.0.0.1 and stops by itself.
#
# Environment: DURATION (10s), CONNS (16), WRK_THREADS (2), WORKERS (2: nginx workers and
# switchboard threads), ROUNDS (3), SWITCHBOARD (binary, default build/switchboard),
# RSS_REQUESTS (0: skip the long flat-memory run; e.g. 1000000), SYSCALLS (1: count them),
# CLUSTER (1: also a gateway whose key limits are shared through a private redis-server on
# loopback, beside the same gateway alone, both with limits set: the cost of shared limits).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SWITCHBOARD:-$root/build/switchboard}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
WRK_THREADS=${WRK_THREADS:-2}
WORKERS=${WORKERS:-2}
RSS_REQUESTS=${RSS_REQUESTS:-0}
ROUNDS=${ROUNDS:-3}
SYSCALLS=${SYSCALLS:-1}
P_STATIC=18501
P_NGINX=18502
P_SB=18503
P_REDIS=18504
P_SB_ALONE=18505
P_SB_CLUSTER=18506
CLUSTER=${CLUSTER:-0}

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v strace >/dev/null; then
  bash "$root/scripts/install-deps.sh" --bench
fi
[ -x "$bin" ] || { echo "load.sh: $bin not built (run make build)" >&2; exit 2; }

work=$(mktemp -d)
sb_pid=""
extra_pids=()
cleanup() {
  [ -n "$sb_pid" ] && kill "$sb_pid" 2>/dev/null && wait "$sb_pid" 2>/dev/null || true
  for p in "${extra_pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  nginx -c "$work/nginx.conf" -p "$work" -s stop 2>/dev/null || true
  nginx -c "$work/upstream.conf" -p "$work" -s stop 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
chunk() {  # delta JSON, finish reason JSON → one SSE event
  printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}\n\n' "$1" "$2"
}
stream=$(
  chunk '{"role":"assistant","content":""}' null
  for w in 'Hello!' ' How' ' can' ' I' ' help?'; do chunk "{\"content\":\"$w\"}" null; done
  printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}\n\n'
  printf 'data: [DONE]\n\n'
)
stream+=$'\n\n'  # $(...) dropped the last event's blank line, which ends it
nginx_quote() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }
mkdir -p "$work/logs"
nginx_head() {  # name → the common part of an nginx instance's configuration
  cat <<CONF
worker_processes $WORKERS;
pid $work/$1.pid;
error_log $work/logs/$1-error.log warn;
events { worker_connections 4096; }
CONF
}
{
  nginx_head upstream
  cat <<CONF
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$P_STATIC reuseport;
    location / { default_type application/json; return 200 $(nginx_quote "$completion"); }
    location /stream/ { default_type text/event-stream; return 200 $(nginx_quote "$stream"); }
  }
}
CONF
} > "$work/upstream.conf"
{
  nginx_head nginx
  cat <<CONF
http {
  access_log off;
  keepalive_requests 1000000;
  upstream static_upstream { server 127.0.0.1:$P_STATIC; keepalive 256; }
  server {
    listen 127.0.0.1:$P_NGINX reuseport;
    location / {
      proxy_pass http://static_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
} > "$work/nginx.conf"
nginx -c "$work/upstream.conf" -p "$work"
nginx -c "$work/nginx.conf" -p "$work"

# The example's defaults (state and log sections as examples/switchboard.yaml ships them).
cat > "$work/switchboard.yaml" <<CONF
listen: 127.0.0.1:$P_SB
server: { threads: $WORKERS }
state: { path: $work/bench.db }
log: { level: info, format: text, access_log: true }
providers:
  up: { kind: openai, base_url: "http://127.0.0.1:$P_STATIC/v1", keys: [bench-key] }
  up-stream: { kind: openai, base_url: "http://127.0.0.1:$P_STATIC/stream/v1", keys: [bench-key] }
models:
  bench-model: { provider: up }
  bench-stream: { provider: up-stream, upstream: bench-model }
CONF
"$bin" serve --config "$work/switchboard.yaml" > "$work/switchboard.log" 2>&1 &
sb_pid=$!

lua() {  # file model stream
  cat > "$work/$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"$2","stream":$3,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":32}'
LUA
}
lua post.lua bench-model false
lua stream.lua bench-stream true

for p in $P_STATIC $P_NGINX $P_SB; do
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$p/" && break
    sleep 0.05
  done
done

# CPU ticks (user, system) of a proxy's processes: nginx's workers, or switchboard.
proxy_pids() {  # nginx | switchboard
  if [ "$1" = nginx ]; then pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' '; else echo "$sb_pid"; fi
}
cpu_ticks() {  # pids… → "user system" (clock ticks)
  local u=0 s=0 a b p
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + a)) s=$((s + b))
  done
  echo "$u $s"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

wrk_run() {  # name url lua conns threads [duration] → "rps p50 p99 non2xx requests user_us sys_us"
  local out pids u0 s0 u1 s1
  case "$1" in nginx*) pids=$(proxy_pids nginx) ;; switchboard*) pids=$(proxy_pids switchboard) ;; *) pids="" ;; esac
  # shellcheck disable=SC2086
  read -r u0 s0 <<<"$(cpu_ticks $pids)"
  out=$(wrk -t"$5" -c"$4" -d"${6:-$DURATION}" --latency -s "$work/$3" "$2")
  # shellcheck disable=SC2086
  read -r u1 s1 <<<"$(cpu_ticks $pids)"
  echo "$out" > "$work/wrk-$1.txt"
  local rps p50 p99 non2xx reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local uus sus
  uus=$(awk -v t=$(( (u1 - u0) * TICK_US )) -v n="${reqs:-0}" 'BEGIN { printf "%.1f", (n > 0 ? t / n : 0) }')
  sus=$(awk -v t=$(( (s1 - s0) * TICK_US )) -v n="${reqs:-0}" 'BEGIN { printf "%.1f", (n > 0 ? t / n : 0) }')
  echo "$rps $p50 $p99 ${non2xx:-0} ${reqs:-0} $uus $sus"
}

to_us() {  # wrk latency (e.g. 1.23ms, 850.00us, 1.2s) → microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }

url_sb="http://127.0.0.1:$P_SB/v1/chat/completions"
url_ng="http://127.0.0.1:$P_NGINX/v1/chat/completions"
url_ng_stream="http://127.0.0.1:$P_NGINX/stream/v1/chat/completions"
url_static="http://127.0.0.1:$P_STATIC/v1/chat/completions"

# One scenario: ROUNDS interleaved nginx/switchboard pairs; prints each round and the medians,
# and sets REPLY_RATIO (throughput), REPLY_P50 (nginx, switchboard p50 medians in µs).
scenario() {  # title nginx_url lua conns threads
  local title=$1 n_url=$2 script=$3 conns=$4 threads=$5
  local ratios="" n_p50s="" w_p50s="" n_rpss="" w_rpss="" n_us="" n_ss="" w_us="" w_ss=""
  printf '\n%s (%s connections, %s wrk threads, %s each)\n' "$title" "$conns" "$threads" "$DURATION"
  printf '%-26s %12s %10s %10s %8s %14s\n' "target" "req/s" "p50" "p99" "non-2xx" "CPU us/req u+s"
  for r in $(seq 1 "$ROUNDS"); do
    local n w
    if (( r % 2 )); then
      n=$(wrk_run nginx "$n_url" "$script" "$conns" "$threads")
      w=$(wrk_run switchboard "$url_sb" "$script" "$conns" "$threads")
    else
      w=$(wrk_run switchboard "$url_sb" "$script" "$conns" "$threads")
      n=$(wrk_run nginx "$n_url" "$script" "$conns" "$threads")
    fi
    read -r n_rps n_p50 n_p99 n_err _ n_u n_s <<<"$n"
    read -r w_rps w_p50 w_p99 w_err _ w_u w_s <<<"$w"
    printf '%-26s %12s %10s %10s %8s %14s\n' "nginx reverse proxy #$r" "$n_rps" "$n_p50" "$n_p99" "$n_err" "$n_u+$n_s"
    printf '%-26s %12s %10s %10s %8s %14s\n' "switchboard #$r" "$w_rps" "$w_p50" "$w_p99" "$w_err" "$w_u+$w_s"
    n_us+=" $n_u" n_ss+=" $n_s" w_us+=" $w_u" w_ss+=" $w_s"
    ratios+=" $(ratio "$w_rps" "$n_rps")"
    n_rpss+=" $n_rps" w_rpss+=" $w_rps"
    n_p50s+=" $(to_us "$n_p50")" w_p50s+=" $(to_us "$w_p50")"
  done
  REPLY_RATIO=$(median <<<"$ratios")
  REPLY_P50="$(median <<<"$n_p50s") $(median <<<"$w_p50s")"
  printf 'medians: nginx %.0f req/s, switchboard %.0f req/s; switchboard/nginx throughput %.2f (rounds:%s)\n' \
    "$(median <<<"$n_rpss")" "$(median <<<"$w_rpss")" "$REPLY_RATIO" "$ratios"
  printf 'CPU per request (medians, user+system): nginx proxy %s+%s us, switchboard %s+%s us\n' \
    "$(median <<<"$n_us")" "$(median <<<"$n_ss")" "$(median <<<"$w_us")" "$(median <<<"$w_ss")"
}

wrk_run warm "$url_sb" post.lua "$CONNS" "$WRK_THREADS" 2s >/dev/null
wrk_run warm "$url_sb" stream.lua "$CONNS" "$WRK_THREADS" 2s >/dev/null
read -r s_rps s_p50 _ <<<"$(wrk_run static "$url_static" post.lua "$CONNS" "$WRK_THREADS")"
printf '\nstatic upstream alone (nginx return 200): %s req/s, p50 %s\n' "$s_rps" "$s_p50"

scenario "non-stream" "$url_ng" post.lua "$CONNS" "$WRK_THREADS"
ns_ratio=$REPLY_RATIO
scenario "stream (7 SSE events)" "$url_ng_stream" stream.lua "$CONNS" "$WRK_THREADS"
st_ratio=$REPLY_RATIO

# Unloaded: one connection; the upstream alone gives the base to subtract.
statics=""
for r in $(seq 1 "$ROUNDS"); do
  read -r _ p50 _ <<<"$(wrk_run static1 "$url_static" post.lua 1 1)"
  statics+=" $(to_us "$p50")"
done
base=$(median <<<"$statics")
scenario "one connection" "$url_ng" post.lua 1 1
read -r n1 w1 <<<"$REPLY_P50"
added_n=$(awk -v a="$n1" -v b="$base" 'BEGIN { printf "%.1f", a - b }')
added_w=$(awk -v a="$w1" -v b="$base" 'BEGIN { printf "%.1f", a - b }')
printf 'added p50 over the upstream alone (%.1f us): nginx %s us, switchboard %s us (%.2fx)\n' \
  "$base" "$added_n" "$added_w" "$(ratio "$added_w" "$added_n")"

printf '\nsummary: non-stream %.2fx nginx, stream %.2fx nginx, c1 added p50 %.2fx nginx'"'"'s\n' \
  "$ns_ratio" "$st_ratio" "$(ratio "$added_w" "$added_n")"

if [ "$SYSCALLS" = 1 ] && command -v strace >/dev/null; then
  # strace slows the process down; the counts per request are what it is for.
  for kind in post stream; do
    strace -c -f -q -p "$sb_pid" -o "$work/strace-$kind.txt" &
    st_pid=$!
    sleep 0.5
    read -r _ _ _ _ reqs _ <<<"$(wrk_run "strace-$kind" "$url_sb" "$kind.lua" "$CONNS" "$WRK_THREADS" 3s)"
    kill -INT "$st_pid" 2>/dev/null || true
    wait "$st_pid" 2>/dev/null || true
    awk -v n="$reqs" -v kind="$kind" '
      $NF ~ /^(sendmsg|recvmsg|sendto|recvfrom|write|writev|read|futex|epoll_wait|epoll_ctl|pwrite64|fdatasync|fsync)$/ {
        calls[$NF] = $4 }
      END {
        printf "syscalls per %s request (%d requests):", kind, n
        for (c in calls) if (n > 0) printf " %s %.2f", c, calls[c] / n
        printf "\n" }' "$work/strace-$kind.txt"
  done
fi

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$sb_pid/status"; }

if [ "$RSS_REQUESTS" -gt 0 ]; then
  # Flat memory: RSS after the first 10% of the requests vs after all of them.
  read -r w_rps _ <<<"$(wrk_run rate "$url_sb" post.lua "$CONNS" "$WRK_THREADS" 3s)"
  rate=${w_rps%.*}
  secs=$(( RSS_REQUESTS / (rate > 0 ? rate : 1) + 1 ))
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"$(( secs / 10 + 1 ))s" -s "$work/post.lua" "$url_sb" >/dev/null
  early=$(rss_kb)
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" -s "$work/post.lua" "$url_sb" >/dev/null
  late=$(rss_kb)
  awk -v a="$early" -v b="$late" -v n="$RSS_REQUESTS" 'BEGIN { printf "RSS over ~%d requests: %d MB -> %d MB (%+.1f%%)\n", n, a/1024, b/1024, (b-a)*100/a }'
fi

before=$(rss_kb)
wrk -t"$WRK_THREADS" -c1000 -d5s -s "$work/post.lua" "$url_sb" > "$work/wrk-1000.txt" &
wrk_pid=$!
sleep 4
during=$(rss_kb)
wait $wrk_pid
printf 'switchboard RSS: %d MB idle, %d MB with 1000 connections\n' $((before / 1024)) $((during / 1024))

if [ "$CLUSTER" = 1 ]; then
  # The same gateway twice, with key limits (one key, max_concurrent and rpm far above the load):
  # alone, and with the limits shared through Redis (one admission script per request).
  redis-server --port $P_REDIS --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  extra_pids+=($!)
  for kind in alone cluster; do
    port=$P_SB_ALONE
    [ "$kind" = cluster ] && port=$P_SB_CLUSTER
    {
      echo "listen: 127.0.0.1:$port"
      echo "server: { threads: $WORKERS }"
      echo "state: { path: $work/bench-$kind.db }"
      echo "log: { level: info, format: text, access_log: true }"
      [ "$kind" = cluster ] && echo "cluster: { redis: \"redis://127.0.0.1:$P_REDIS/0\" }"
      echo "providers:"
      echo "  up: { kind: openai, base_url: \"http://127.0.0.1:$P_STATIC/v1\", keys: [bench-key], limits: { max_concurrent: 100000, rpm: 1000000000 } }"
      echo "models:"
      echo "  bench-model: { provider: up }"
    } > "$work/switchboard-$kind.yaml"
    "$bin" serve --config "$work/switchboard-$kind.yaml" > "$work/switchboard-$kind.log" 2>&1 &
    extra_pids+=($!)
  done
  for p in $P_SB_ALONE $P_SB_CLUSTER; do
    for _ in $(seq 1 100); do
      curl -s -o /dev/null "http://127.0.0.1:$p/" && break
      sleep 0.05
    done
  done
  url_alone="http://127.0.0.1:$P_SB_ALONE/v1/chat/completions"
  url_cluster="http://127.0.0.1:$P_SB_CLUSTER/v1/chat/completions"
  wrk_run warm "$url_cluster" post.lua "$CONNS" "$WRK_THREADS" 2s >/dev/null
  printf '
shared limits through Redis (non-stream, %s connections, %s each)
' "$CONNS" "$DURATION"
  printf '%-26s %12s %10s %10s %8s
' "target" "req/s" "p50" "p99" "non-2xx"
  ratios="" added=""
  for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then
      a=$(wrk_run alone "$url_alone" post.lua "$CONNS" "$WRK_THREADS")
      c=$(wrk_run cluster "$url_cluster" post.lua "$CONNS" "$WRK_THREADS")
    else
      c=$(wrk_run cluster "$url_cluster" post.lua "$CONNS" "$WRK_THREADS")
      a=$(wrk_run alone "$url_alone" post.lua "$CONNS" "$WRK_THREADS")
    fi
    read -r a_rps a_p50 a_p99 a_err _ <<<"$a"
    read -r c_rps c_p50 c_p99 c_err _ <<<"$c"
    printf '%-26s %12s %10s %10s %8s
' "switchboard alone #$r" "$a_rps" "$a_p50" "$a_p99" "$a_err"
    printf '%-26s %12s %10s %10s %8s
' "switchboard + redis #$r" "$c_rps" "$c_p50" "$c_p99" "$c_err"
    ratios+=" $(ratio "$c_rps" "$a_rps")"
    added+=" $(awk -v a="$(to_us "$a_p50")" -v c="$(to_us "$c_p50")" 'BEGIN { printf "%.1f", c - a }')"
  done
  printf 'medians: with redis / alone throughput %.2f (rounds:%s); added p50 %s us (rounds:%s)\n' \
    "$(median <<<"$ratios")" "$ratios" "$(median <<<"$added")" "$added"
fi
