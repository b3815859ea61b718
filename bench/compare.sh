#!/usr/bin/env bash
# Side-by-side benchmark: chaintable vs Redis (standalone, in memory) and a
# 3-member chain vs a 3-member etcd cluster, all on 127.0.0.1, all driven
# by table-bench (the same generator). Prints one table; JSON lines are
# kept in $OUT (default: bench/results-<date>.jsonl).
#
# Usage: bench/compare.sh [SECONDS_PER_TEST]   (default 10)
# Installs redis-server, etcd-server/etcd-client and zookeeper from Debian
# if missing (needs root). Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
out=${OUT:-bench/results-$(date +%Y%m%d-%H%M%S).jsonl}
source bench/lib.sh
cleanup_extra() { rm -rf /dev/shm/chaintable-bench-etcd-*; }
bench_setup bench
: > "$out"

echo "== standalone: chaintable vs Redis (50 clients, 100-byte values, 16-byte keys over 100,000 keys)"
ct=$(free_port); "$bin/table-server" "$ct" 64 --bind 127.0.0.1 2>"$tmp/ct.log" & ct_pid=$!; pids+=($ct_pid)
rd=$(free_port); redis-server --port "$rd" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 & rd_pid=$!; pids+=($rd_pid)
wait_port "$ct"; wait_port "$rd"
for P in 1 16; do
  bench --addr 127.0.0.1:$ct --label chaintable -c 50 -d 100 -r 100000 -P $P -t put,get --server-pid $ct_pid
  bench --redis 127.0.0.1:$rd --label redis -c 50 -d 100 -r 100000 -P $P -t put,get --server-pid $rd_pid
done
kill -9 $ct_pid $rd_pid

echo "== standalone with client TLS (a throwaway CA and a certificate for 127.0.0.1)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/ca.key" -out "$tmp/ca.pem" \
  -subj /CN=chaintable-bench-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/server.key" -out "$tmp/server.csr" \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$tmp/ext"
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
  -out "$tmp/server.pem" -days 2 -extfile "$tmp/ext" 2>/dev/null
ct=$(free_port); "$bin/table-server" "$ct" 64 --bind 127.0.0.1 --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key" \
  2>"$tmp/ct-tls.log" & ct_pid=$!; pids+=($ct_pid)
wait_port "$ct"
for P in 1 16; do
  bench --addr 127.0.0.1:$ct --tls --ca "$tmp/ca.pem" --label chaintable-tls -c 50 -d 100 -r 100000 -P $P -t put,get --server-pid $ct_pid
done
kill -9 $ct_pid

echo "== replication: 3-member chain vs 3-member etcd (both in memory: chaintable has no disk; etcd's data dir is on tmpfs)"
start_zookeeper
start_chain 3 /chain
start_etcd /dev/shm/chaintable-bench-etcd
e_ports=("${etcd_ports[@]}")
for c in 1 100; do
  bench --zookeeper 127.0.0.1:$zk --label chain -c $c -d 100 -r 100000 -t put,get --server-pid "${chain_pids[0]}" --server-pid "${chain_pids[1]}" --server-pid "${chain_pids[2]}"
  bench --etcd 127.0.0.1:${e_ports[0]} --label etcd -c $c -d 100 -r 100000 -t put,get --server-pid "${etcd_pids[0]}" --server-pid "${etcd_pids[1]}" --server-pid "${etcd_pids[2]}"
done
for p in "${etcd_pids[@]}"; do kill -9 "$p"; done

echo "== failover: kill -9 of the head -> first successful write"
"$bin/table-client" --zookeeper 127.0.0.1:$zk put warmup 1 >/dev/null
head_pid=${chain_pids[0]}
start=$(date +%s%N); kill -9 "$head_pid"
until "$bin/table-client" --zookeeper --timeout-ms 2000 127.0.0.1:$zk put failover 1 >/dev/null 2>&1; do sleep 0.02; done
end=$(date +%s%N)
echo "{\"target\":\"chain\",\"test\":\"failover\",\"ms\":$(( (end-start)/1000000 ))}" | tee -a "$out"
for p in "${chain_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done

echo "== state transfer: about 1 GB to a joining member"
p1=$(free_port); "$bin/table-server" "$p1" 64 127.0.0.1:$zk --bind 127.0.0.1 --cluster-secret-file "$tmp/cluster.secret" --chain-root /transfer 2>"$tmp/t1.log" & t1=$!; pids+=($t1)
wait_port "$p1"; sleep 1
"$bin/table-bench" -q --addr 127.0.0.1:$p1 -c 8 -d 102400 -r 10240 -n 30000 -P 4 -t put >/dev/null
bytes=$(( $("$bin/table-client" 127.0.0.1:$p1 size) * 102400 ))
p2=$(free_port)
start=$(date +%s%N)
"$bin/table-server" "$p2" 64 127.0.0.1:$zk --bind 127.0.0.1 --cluster-secret-file "$tmp/cluster.secret" --chain-root /transfer 2>"$tmp/t2.log" & pids+=($!)
until "$bin/table-client" 127.0.0.1:$p2 stats 2>/dev/null | grep -q "^role: tail"; do sleep 0.05; done
end=$(date +%s%N)
ms=$(( (end-start)/1000000 ))
echo "{\"target\":\"chain\",\"test\":\"state_transfer\",\"bytes\":$bytes,\"ms\":$ms,\"mb_per_sec\":$(( bytes / 1000 / (ms > 0 ? ms : 1) ))}" | tee -a "$out"

echo
python3 bench/report.py "$out" "$secs"

echo
echo "== durable rows (bench/durable.sh): --data-dir vs Redis's append-only file"
OUT="${out%.jsonl}-durable.jsonl" bash bench/durable.sh "$secs"

echo
echo "== CRAQ rows (bench/craq.sh): reads at every member vs at the tail"
OUT="${out%.jsonl}-craq.jsonl" bash bench/craq.sh "$secs"
