#!/usr/bin/env bash
# CRAQ rows: a 3-member chain with reads answered at every member (CRAQ,
# spec §5.5) against reads at the tail only, same generator (table-bench),
# same chain: read-only and 90 %-read workloads, with each member's share
# of the reads and its CPU per operation. Then writes with CRAQ on and off
# (what the dirty-key bookkeeping costs).
#
# Usage: bench/craq.sh [SECONDS_PER_TEST]   (default 10)
# Installs zookeeper from Debian if missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
out=${OUT:-bench/results-craq-$(date +%Y%m%d-%H%M%S).jsonl}
source bench/lib.sh
bench_setup craq
: > "$out"
start_zookeeper
common=(-c 50 -d 100 -r 100000)

echo "== CRAQ on: reads spread over the 3 members vs all at the tail (50 clients, 100-byte values, 100,000 keys)"
start_chain 3 /craq
read -ra pid_args <<<"$(server_pid_args "${chain_pids[@]}")"
"$bin/table-bench" -q --zookeeper 127.0.0.1:$zk --chain-root /craq "${common[@]}" -n 300000 -P 16 -t put >/dev/null
for reads in spread tail; do
  bench --zookeeper 127.0.0.1:$zk --chain-root /craq --reads $reads --label "craq-$reads" "${common[@]}" -t get,mix "${pid_args[@]}"
done
bench --zookeeper 127.0.0.1:$zk --chain-root /craq --label craq-on "${common[@]}" -t put "${pid_args[@]}"
stop_chain

echo "== CRAQ off: writes without the dirty-key bookkeeping"
start_chain 3 /craq-off --craq off
read -ra pid_args <<<"$(server_pid_args "${chain_pids[@]}")"
bench --zookeeper 127.0.0.1:$zk --chain-root /craq-off --label craq-off "${common[@]}" -t put "${pid_args[@]}"

echo
python3 - "$out" <<'PY'
import json, sys
print(f"{'target':<12} {'test':<5} {'ops/s':>9} {'p99 µs':>7} {'cpu µs/op':>9}  cpu µs/op per member (head first) / reads per member")
for line in open(sys.argv[1]):
    r = json.loads(line)
    reads = r.get("reads_by_server") or {}
    share = " ".join(f"{a.rsplit(':', 1)[-1]}:{n}" for a, n in reads.items()) if len(reads) > 1 else "-"
    each = " ".join(str(c) for c in r.get("cpu_us_per_op_by_pid") or [])
    print(f"{r['target']:<12} {r['test']:<5} {r['ops_per_sec']:>9} {r['p99_us']:>7} {r['cpu_us_per_op']!s:>9}  {each} / {share}")
PY
