#!/usr/bin/env bash
# Memory per entry: a standalone table-server and a Redis (no persistence)
# each filled by the same generator (table-bench, 50 clients, P=16, 100-byte
# values under 16-byte keys, 3,000,000 puts over 1,000,000 keys), then the
# growth of the server's resident memory divided by the entries it holds
# (SIZE; Redis: DBSIZE).
#
# Usage: bench/memory.sh [KEYS]   (default 1000000); SERVER_ARGS adds
# table-server flags (e.g. --watch-history-bytes 16777216: the history of
# recent changes kept for watches, 64 MiB by default, is part of the growth).
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
source bench/lib.sh
bench_setup memory
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fill=(-q -c 50 -P 16 -d 100 -r "$keys" -n $((keys * 3)) -t put)

port=$(free_port)
"$bin/table-server" "$port" 16 --bind 127.0.0.1 ${SERVER_ARGS:-} 2>"$tmp/table.log" & pid=$!; pids+=($pid)
wait_port "$port"; before=$(rss_kib $pid)
"$bin/table-bench" --addr 127.0.0.1:$port "${fill[@]}" >/dev/null
after=$(rss_kib $pid)
entries=$("$bin/table-client" 127.0.0.1:$port size)
echo "chaintable: $entries entries, RSS +$(( (after - before) / 1024 )) MiB, $(( (after - before) * 1024 / entries )) bytes per entry"

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 & pid=$!; pids+=($pid)
wait_port "$port"; before=$(rss_kib $pid)
"$bin/table-bench" --redis 127.0.0.1:$port "${fill[@]}" >/dev/null
after=$(rss_kib $pid)
entries=$(redis-cli -p "$port" dbsize)
echo "redis:      $entries entries, RSS +$(( (after - before) / 1024 )) MiB, $(( (after - before) * 1024 / entries )) bytes per entry"
