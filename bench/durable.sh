#!/usr/bin/env bash
# Durable rows: a standalone table-server with --data-dir against Redis with
# its append-only file, same fsync policy, same generator (table-bench), data
# on the machine's real disk (not tmpfs). Then, at about a million keys:
# the longest pause a background snapshot causes, and recovery speed after
# kill -9. Prints a table; JSON lines are kept in $OUT.
#
# Then a durable 3-member chain (--data-dir, --fsync always on every member)
# against a 3-member etcd cluster with its data on the same disk.
#
# Usage: bench/durable.sh [SECONDS_PER_TEST]   (default 10)
# Installs redis-server, etcd and zookeeper from Debian if missing (needs
# root). DATA (default /var/tmp) is where the data directories go: it must
# be a real disk. SECTIONS (default "standalone million chain") picks parts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
out=${OUT:-bench/results-durable-$(date +%Y%m%d-%H%M%S).jsonl}
data_root=${DATA:-/var/tmp}
sections=${SECTIONS:-standalone million chain}
source bench/lib.sh
bench_setup durable "$data_root"
# The port opens before recovery ends: wait for the server to say it serves.
wait_serving() { for _ in $(seq 600); do grep -q "serving" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "$1: never served" >&2; return 1; }
: > "$out"
echo "== data on $(df -P "$tmp" | awk 'NR==2 {print $1 " (" $6 ")"}')"

if [[ " $sections " == *" standalone "* ]]; then
for policy in always everysec; do
  echo "== standalone SET, --fsync $policy vs Redis appendfsync $policy (50 clients, 100-byte values, 100,000 keys)"
  ct=$(free_port)
  "$bin/table-server" "$ct" 64 --bind 127.0.0.1 --data-dir "$tmp/ct-$policy" --fsync "$policy" 2>"$tmp/ct-$policy.log" &
  ct_pid=$!; pids+=($ct_pid)
  rd=$(free_port)
  redis-server --port "$rd" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$policy" \
    --dir "$tmp" --appenddirname "redis-$policy" >"$tmp/redis-$policy.log" 2>&1 &
  rd_pid=$!; pids+=($rd_pid)
  wait_port "$ct"; wait_port "$rd"
  for P in 1 16; do
    bench --addr 127.0.0.1:$ct --label "chaintable-$policy" -c 50 -d 100 -r 100000 -P $P -t put --server-pid $ct_pid
    bench --redis 127.0.0.1:$rd --label "redis-$policy" -c 50 -d 100 -r 100000 -P $P -t put --server-pid $rd_pid
  done
  kill -9 $ct_pid $rd_pid
done
fi

if [[ " $sections " == *" million "* ]]; then
echo "== about a million keys: snapshot pauses while writing, then recovery after kill -9"
ct=$(free_port)
dir="$tmp/million"
"$bin/table-server" "$ct" 64 --bind 127.0.0.1 --data-dir "$dir" --fsync everysec \
  --snapshot-every-writes 100000000 2>"$tmp/load.log" & ct_pid=$!; pids+=($ct_pid)
wait_port "$ct"
"$bin/table-bench" -q --addr 127.0.0.1:$ct -c 50 -d 100 -r 1000000 -n 3000000 -P 16 -t put >/dev/null
kill -9 $ct_pid
# Restart (replaying the whole log), then write with a snapshot every 300,000
# writes, so snapshots copy the full table while clients write.
ct=$(free_port)
"$bin/table-server" "$ct" 64 --bind 127.0.0.1 --data-dir "$dir" --fsync always \
  --snapshot-every-writes 300000 2>"$tmp/snap.log" & ct_pid=$!; pids+=($ct_pid)
wait_serving "$tmp/snap.log"
bench --addr 127.0.0.1:$ct --label "chaintable-snapshotting" -c 50 -d 100 -r 1000000 -P 16 -t put --server-pid $ct_pid
sleep 2
kill -9 $ct_pid
ct=$(free_port)
"$bin/table-server" "$ct" 64 --bind 127.0.0.1 --data-dir "$dir" 2>"$tmp/recover.log" & ct_pid=$!; pids+=($ct_pid)
wait_serving "$tmp/recover.log"
kill -9 $ct_pid
python3 - "$tmp/load.log" "$tmp/snap.log" "$tmp/recover.log" <<'EOF' | tee -a "$out"
import json, re, sys
def fields(line):
    return dict(re.findall(r'(\w+)="?([^" ]+)"?', line))
first = [fields(l) for l in open(sys.argv[2]) if "recovered the table" in l][0]
print(json.dumps({"target": "chaintable", "test": "recovery_log_only", "records": int(first["replayed_records"]),
                  "mb": float(first["replayed_mb"]), "mb_per_sec": float(first["replay_mb_per_s"]),
                  "took_ms": int(first["took_ms"])}))
snaps = [fields(l) for l in open(sys.argv[2]) if "snapshot written" in l]
if snaps:
    pauses = sorted(int(s["longest_pause_us"]) for s in snaps)
    print(json.dumps({"target": "chaintable", "test": "snapshot", "count": len(snaps),
                      "entries": int(snaps[-1]["entries"]), "bytes": int(snaps[-1]["bytes"]),
                      "pause_us_median": pauses[len(pauses) // 2], "pause_us_max": pauses[-1],
                      "took_ms_max": max(int(s["took_ms"]) for s in snaps)}))
last = [fields(l) for l in open(sys.argv[3]) if "recovered the table" in l][0]
print(json.dumps({"target": "chaintable", "test": "recovery_snapshot_and_log",
                  "snapshot_entries": int(last["snapshot_entries"]), "snapshot_ms": int(last["snapshot_ms"]),
                  "records": int(last["replayed_records"]), "mb": float(last["replayed_mb"]),
                  "mb_per_sec": float(last["replay_mb_per_s"]), "took_ms": int(last["took_ms"])}))
EOF
fi

if [[ " $sections " == *" chain "* ]]; then
echo "== durable replication: 3-member chain (--fsync always on every member) vs 3-member etcd, data on the same disk"
start_zookeeper
start_chain 3 /chain --data-dir "$tmp/chain-{i}" --fsync always
start_etcd "$tmp/etcd"
e_ports=("${etcd_ports[@]}")
for c in 1 100; do
  bench --zookeeper 127.0.0.1:$zk --label durable-chain -c $c -d 100 -r 100000 -t put --server-pid "${chain_pids[0]}" --server-pid "${chain_pids[1]}" --server-pid "${chain_pids[2]}"
  bench --etcd 127.0.0.1:${e_ports[0]} --label etcd-disk -c $c -d 100 -r 100000 -t put --server-pid "${etcd_pids[0]}" --server-pid "${etcd_pids[1]}" --server-pid "${etcd_pids[2]}"
done
for p in "${etcd_pids[@]}" "${chain_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
fi

echo
python3 - "$out" "$secs" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def find(target, test, **kw):
    return next((r for r in rows if r.get("target") == target and r.get("test") == test
                 and all(r.get(k) == v for k, v in kw.items())), None)
print("| workload | metric | chaintable | Redis | ours vs Redis |")
print("|---|---|---|---|---|")
for policy in ("always", "everysec"):
    for P in (1, 16):
        o, r = find(f"chaintable-{policy}", "put", pipeline=P), find(f"redis-{policy}", "put", pipeline=P)
        if not o or not r:
            continue
        w = f"SET P={P}, fsync {policy}"
        print(f"| {w} | ops/s | {o['ops_per_sec']:,.0f} | {r['ops_per_sec']:,.0f} | {o['ops_per_sec'] / r['ops_per_sec']:.2f}x |")
        print(f"| {w} | p99 µs | {o['p99_us']} | {r['p99_us']} | {r['p99_us'] / max(o['p99_us'], 1):.2f}x |")
        print(f"| {w} | server CPU µs/op | {o['cpu_us_per_op']} | {r['cpu_us_per_op']} | - |")
s = find("chaintable-snapshotting", "put", pipeline=16)
if s:
    print(f"| SET P=16 at ~1M keys, snapshot every 300k writes | ops/s, p99 µs, max µs | {s['ops_per_sec']:,.0f}, {s['p99_us']}, {s['max_us']} | - | - |")
n = find("chaintable", "snapshot")
if n:
    print(f"| snapshots of {n['entries']:,} entries ({n['bytes'] / 1e6:.0f} MB), n_lists 64 | longest pause µs (median, max of {n['count']}) | {n['pause_us_median']}, {n['pause_us_max']} | - | target: a few ms |")
for t, label in (("recovery_log_only", "recovery, log only"), ("recovery_snapshot_and_log", "recovery, snapshot + log")):
    r = find("chaintable", t)
    if r:
        print(f"| {label}: {r['records']:,} records, {r['mb']:.0f} MB of log | log MB/s (total ms) | {r['mb_per_sec']:.0f} ({r['took_ms']}) | - | target >= 200 |")
for c in (1, 100):
    o, e = find("durable-chain", "put", clients=c), find("etcd-disk", "put", clients=c)
    if not o or not e:
        continue
    w = f"3-member durable chain vs etcd, {c} clients, PUT"
    print(f"| {w} | ops/s | {o['ops_per_sec']:,.0f} | etcd {e['ops_per_sec']:,.0f} | {o['ops_per_sec'] / e['ops_per_sec']:.2f}x |")
    print(f"| {w} | p50 / p99 µs | {o['p50_us']} / {o['p99_us']} | etcd {e['p50_us']} / {e['p99_us']} | - |")
print(f"\n({sys.argv[2]} s per throughput test)")
EOF
