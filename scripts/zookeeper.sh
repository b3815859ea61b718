#!/usr/bin/env bash
# Starts a throwaway ZooKeeper for development on 127.0.0.1:${1:-2181}, with
# its data in a temp dir, in the foreground (Ctrl-C stops it).
# Needs Debian's zookeeper package: apt-get install -y zookeeper
set -euo pipefail
port=${1:-2181}
[ -f /usr/share/java/zookeeper.jar ] || { echo "install ZooKeeper first: apt-get install -y zookeeper" >&2; exit 2; }
dir=$(mktemp -d /tmp/chaintable-zk.XXXXXX)
jpid=
# Ctrl-C, or a script that started this one stopping it (TERM): the JVM
# goes too, not only this shell.
trap '[ -n "$jpid" ] && kill "$jpid" 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 143' TERM INT
cat > "$dir/zoo.cfg" <<CFG
tickTime=200
minSessionTimeout=400
maxSessionTimeout=20000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
CFG
echo "ZooKeeper on 127.0.0.1:$port (data in $dir)"
java -Xmx256m -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
  org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" &
jpid=$!
wait "$jpid"
