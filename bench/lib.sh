# Shared by the bench scripts (sourced, not run): the processes they start,
# how they wait for them, and one JSON line per test through table-bench.
# The caller sets out (the JSON lines file) and secs (seconds per test),
# and calls bench_setup, which sets bin, tmp and pids.

# bench_setup NAME [DIR]: installs what is missing, builds the release
# binaries (bin), makes the scratch directory tmp (DIR/chaintable-NAME.*,
# DIR defaulting to /tmp), and stops every process in pids and removes tmp
# on exit. A script with more to clean defines cleanup_extra.
bench_setup() {
  ensure_packages
  cargo build --release --quiet
  bin=target/release
  tmp=$(mktemp -d "${2:-/tmp}/chaintable-$1.XXXXXX")
  pids=()
  trap 'cleanup_pids; rm -rf "$tmp"; if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi' EXIT
}

# Installs what is missing from Debian (needs root): redis, etcd, ZooKeeper.
ensure_packages() {
  local need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v etcd >/dev/null || need+=(etcd-server etcd-client)
  [ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# TERM first (scripts/zookeeper.sh then stops its JVM), then KILL.
cleanup_pids() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
bench() { "$bin/table-bench" -q --json --duration "$secs" "$@" | tee -a "$out"; }

# Starts ZooKeeper on a free port and waits until it serves; sets zk.
start_zookeeper() {
  zk=$(free_port)
  scripts/zookeeper.sh "$zk" >"$tmp/zk.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$zk && echo srvr >&3 && timeout 1 cat <&3 | grep -q Mode) 2>/dev/null && return 0; sleep 0.2; done
  echo "ZooKeeper on $zk never served" >&2; return 1
}

# start_chain N ROOT [table-server args...]: N members under chain root
# ROOT, registered one after the other (so start order is chain order);
# sets chain_pids and chain_ports (head first). A member's args may name
# "{i}" (its number, 1..N), e.g. --data-dir "$tmp/chain-{i}".
start_chain() {
  local n=$1 root=$2; shift 2
  [ -f "$tmp/cluster.secret" ] || head -c 32 /dev/urandom | base64 > "$tmp/cluster.secret"
  chain_pids=(); chain_ports=()
  local i p args
  for i in $(seq "$n"); do
    p=$(free_port); args=("${@//\{i\}/$i}")
    "$bin/table-server" "$p" 64 127.0.0.1:$zk --bind 127.0.0.1 --cluster-secret-file "$tmp/cluster.secret" \
      --chain-root "$root" "${args[@]}" 2>"$tmp/chain${root//\//-}-$i.log" & chain_pids+=($!); pids+=($!)
    chain_ports+=("$p")
    wait_port "$p"; sleep 0.5
  done
  sleep 1
}

# Stops the chain start_chain started (quietly: no "Killed" lines).
stop_chain() {
  local p
  for p in "${chain_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

# start_etcd DATA_PREFIX: a 3-member etcd cluster, member i's data in
# DATA_PREFIX-i; sets etcd_pids and etcd_ports.
start_etcd() {
  local prefix=$1 peers=() cluster="" i
  etcd_ports=(); etcd_pids=()
  for i in 1 2 3; do etcd_ports+=($(free_port)); peers+=($(free_port)); cluster+="e$i=http://127.0.0.1:${peers[$((i-1))]},"; done
  for i in 1 2 3; do
    etcd --name e$i --data-dir "$prefix-$i" \
      --listen-client-urls http://127.0.0.1:${etcd_ports[$((i-1))]} --advertise-client-urls http://127.0.0.1:${etcd_ports[$((i-1))]} \
      --listen-peer-urls http://127.0.0.1:${peers[$((i-1))]} --initial-advertise-peer-urls http://127.0.0.1:${peers[$((i-1))]} \
      --initial-cluster "${cluster%,}" --initial-cluster-state new --log-level error >"$tmp/etcd$i.log" 2>&1 &
    etcd_pids+=($!); pids+=($!)
  done
  for p in "${etcd_ports[@]}"; do wait_port "$p"; done
  sleep 2
}

# --server-pid for each of the given pids.
server_pid_args() { local p; for p in "$@"; do printf -- '--server-pid %s ' "$p"; done; }
