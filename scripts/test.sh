#!/usr/bin/env bash
# The test command: makes sure ZooKeeper (Debian's package) is installed
# for the chain tests, then runs every test. Tests start their own
# ZooKeeper and servers on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ZooKeeper (apt-get install -y zookeeper)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
  else
    echo "ZooKeeper is needed for the chain tests: sudo apt-get install -y zookeeper" >&2
    exit 2
  fi
fi
# iproute2 (`ip`) lets the torture suite cut network partitions between
# namespaces it creates; without it those faults are skipped with a message.
if ! command -v ip >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing iproute2 (apt-get install -y iproute2)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
# tests/python_client.rs installs the Python client into a fresh virtual
# environment: Python 3 with venv and pip (Debian splits them out).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Python 3 with venv (apt-get install -y python3-venv python3-pip)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
  else
    echo "Python 3 with venv is needed for the Python client's tests: sudo apt-get install -y python3-venv" >&2
    exit 2
  fi
fi
# `testing` compiles in the switches the tests use (hidden table-server
# flags, planted bugs for the simulator); builds for users never have it.
exec cargo test --release --features testing "$@"
