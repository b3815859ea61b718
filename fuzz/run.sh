#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) each, with corpora seeded
# from the protocol test vectors. Fails on the first crash or property
# violation. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_bytes message_roundtrip chunked_decoder server_conn shard_map)

python3 - <<'PY'
import json, os
v = json.load(open("../spec/vectors/frames.json"))
for target in ("decode_bytes", "message_roundtrip", "chunked_decoder", "server_conn"):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for group in ("valid", "malformed"):
        for x in v[group]:
            open(f"corpus/{target}/vector-{x['name']}", "wb").write(bytes.fromhex(x["hex"]))
os.makedirs("corpus/shard_map", exist_ok=True)
open("corpus/shard_map/three-chains", "w").write("shard-map 1\nrange - a\nrange 68 b\nrange 70 c\n")
PY

cargo +nightly fuzz build >/dev/null
mkdir -p logs
for t in "${targets[@]}"; do
  echo "== fuzz target $t for ${seconds}s"
  status=0
  cargo +nightly fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    >"logs/$t.log" 2>&1 || status=$?
  grep -E '^#[0-9]+.*DONE|^Done [0-9]+ runs' "logs/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "logs/$t.log"
    echo "fuzz target $t FAILED (exit $status); see fuzz/logs/$t.log and fuzz/artifacts/$t"
    exit "$status"
  fi
done
echo "all fuzz targets ran ${seconds}s without a finding"
