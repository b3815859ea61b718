#!/usr/bin/env bash
# Cluster rows (spec §5.8): one 3-member chain against a cluster of three
# 3-member chains (the key space cut in three by the shard map), same
# generator (table-bench, routing each key to its chain), same machine:
# PUT and GET ops/s, p99 and the CPU per operation of all members
# together. On a machine with two cores, nine servers share the cores
# three did, so this shows what routing and more processes cost, not the
# speedup of chains on machines of their own. Then a range scan's cost.
#
# Usage: bench/cluster.sh [SECONDS_PER_TEST]   (default 10)
# Installs zookeeper from Debian if missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
out=${OUT:-bench/results-cluster-$(date +%Y%m%d-%H%M%S).jsonl}
source bench/lib.sh
bench_setup cluster
: > "$out"
start_zookeeper
common=(-c 50 -d 100 -r 100000)

echo "== one chain of 3 members"
start_chain 3 /one
read -ra pid_args <<<"$(server_pid_args "${chain_pids[@]}")"
"$bin/table-bench" -q --zookeeper 127.0.0.1:$zk --chain-root /one "${common[@]}" -n 300000 -P 16 -t put >/dev/null
for P in 1 16; do
  bench --zookeeper 127.0.0.1:$zk --chain-root /one --label "one-chain-P$P" "${common[@]}" -P $P -t put,get "${pid_args[@]}"
done
stop_chain

echo "== three chains of 3 members, the key space cut at key:000000033333 and key:000000066666"
all_pids=()
for c in a b c; do
  start_chain 3 /cluster/$c --cluster-root /cluster
  all_pids+=("${chain_pids[@]}")
done
"$bin/table-client" -z 127.0.0.1:$zk --cluster-root /cluster --cluster-secret-file "$tmp/cluster.secret" \
  cluster create a,b,c key:000000033333 key:000000066666 >/dev/null
sleep 1
read -ra pid_args <<<"$(server_pid_args "${all_pids[@]}")"
"$bin/table-bench" -q --zookeeper 127.0.0.1:$zk --cluster-root /cluster "${common[@]}" -n 300000 -P 16 -t put >/dev/null
for P in 1 16; do
  bench --zookeeper 127.0.0.1:$zk --cluster-root /cluster --label "three-chains-P$P" "${common[@]}" -P $P -t put,get "${pid_args[@]}"
done

echo "== a scan of 1,000 keys across the three chains, 100 per page (table-client range, wall time)"
start=$(date +%s%N)
n=0; from=key:000000033000
while [ -n "$from" ] && [ $n -lt 10 ]; do
  page=$("$bin/table-client" -z 127.0.0.1:$zk --cluster-root /cluster range "$from" key:000000034000 100)
  from=$(sed -n 's/^(more from \(.*\))$/\1/p' <<<"$page"); n=$((n + 1))
done
echo "$n pages in $(( ($(date +%s%N) - start) / 1000000 )) ms (each a new table-client process: start-up, ZooKeeper, map)"

echo
python3 - "$out" <<'PY'
import json, sys
print(f"{'target':<18} {'test':<5} {'ops/s':>9} {'p99 µs':>7} {'cpu µs/op (all members)':>24}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['target']:<18} {r['test']:<5} {r['ops_per_sec']:>9} {r['p99_us']:>7} {r['cpu_us_per_op']!s:>24}")
PY
