#!/usr/bin/env bash
# A/B: standalone throughput of two builds of table-server (OLD and NEW bin
# directories), the same generator (NEW's table-bench), alternating; then
# client TLS on NEW; then a 3-member chain of each, both with a cluster
# secret (drop the flag from the OLD line for a build older than the
# secret). JSON lines on stdout.
# Usage: OLD=/path/to/old/target/release bench/ab.sh [SECONDS]
# CHAIN_ONLY=1 runs only the chain part.
# (build the old one with: git worktree add /tmp/old REV && (cd /tmp/old &&
#  cargo build --release --bins))
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD:?set OLD to the bin directory of the older build}
NEW=${NEW:-target/release}
BENCH=$NEW/table-bench
secs=${1:-8}
tmp=$(mktemp -d)
next() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
standalone() { # label bin [extra server args] -- [extra bench args]
  local label=$1 bin=$2; shift 2
  local sargs=() bargs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do sargs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift; bargs=("$@")
  local p=$(next)
  $bin/table-server $p 64 --bind 127.0.0.1 "${sargs[@]}" 2>/dev/null & local pid=$!
  wait_port $p
  for P in 1 16; do
    $BENCH -q --json --duration $secs --addr 127.0.0.1:$p --label $label -c 50 -d 100 -r 100000 -P $P -t put,get --server-pid $pid "${bargs[@]}"
  done
  kill -9 $pid; wait $pid 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $tmp/ca.key -out $tmp/ca.pem -subj /CN=ab-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $tmp/server.key -out $tmp/server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > $tmp/ext
openssl x509 -req -in $tmp/server.csr -CA $tmp/ca.pem -CAkey $tmp/ca.key -CAcreateserial -out $tmp/server.pem -days 2 -extfile $tmp/ext 2>/dev/null
if [ -z "${CHAIN_ONLY:-}" ]; then
for round in 1 2; do
  standalone old $OLD
  standalone new $NEW
done
standalone new-tls $NEW --tls-cert $tmp/server.pem --tls-key $tmp/server.key -- --tls --ca $tmp/ca.pem
fi
# chains
zk=$(next)
scripts/zookeeper.sh $zk > $tmp/zk.log 2>&1 & zkpid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$zk && echo srvr >&3 && timeout 1 cat <&3 | grep -q Mode) 2>/dev/null && break; sleep 0.2; done
head -c 32 /dev/urandom | base64 > $tmp/secret
chain() { # label bin root [secret args]
  local label=$1 bin=$2 root=$3; shift 3
  local pids=()
  for i in 1 2 3; do
    local p=$(next); $bin/table-server $p 64 127.0.0.1:$zk --bind 127.0.0.1 --chain-root $root "$@" 2>$tmp/$label$i.log & pids+=($!)
    wait_port $p; sleep 0.5
  done
  sleep 1.5
  for c in 1 100; do
    $BENCH -q --json --duration $secs --zookeeper 127.0.0.1:$zk --chain-root $root --label $label -c $c -d 100 -r 100000 -P 1 -t put --server-pid ${pids[0]} --server-pid ${pids[1]} --server-pid ${pids[2]}
  done
  kill -9 "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
}
chain chain-old $OLD /ab-old --cluster-secret-file $tmp/secret
chain chain-new $NEW /ab-new --cluster-secret-file $tmp/secret
kill $zkpid 2>/dev/null; wait $zkpid 2>/dev/null  # TERM: scripts/zookeeper.sh stops its JVM
rm -rf "$tmp"
