#!/bin/bash
# Time a 1 GB snapshot to a new node (docs/PERFORMANCE.md, "Snapshot to a new node"): boot a
# 1 GB database into node 1, start node 2 with -join, and wait until node 2 has installed the
# snapshot; then time `cp` + `sync` of the same file, the baseline. Also prints the CPU time each
# node spent during the join (utime + stime, in ticks of 10 ms).
#   BIN=target/release/raftlited bash docs/bench/snapshot-transfer.sh [WORKDIR]
set -u
BIN=$(realpath "${BIN:-target/release/raftlited}")
WORK=${1:-$(mktemp -d)}
cd "$WORK" || exit 1
if [ ! -f source.sqlite ]; then
  python3 -c "
import sqlite3
c = sqlite3.connect('source.sqlite'); c.execute('PRAGMA journal_mode=OFF'); c.execute('PRAGMA synchronous=OFF')
c.execute('CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB)')
c.execute('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000000) INSERT INTO big(pad) SELECT randomblob(1000) FROM c')
c.commit()"
fi
rm -rf n1 n2
"$BIN" -node-id 1 -http-addr 127.0.0.81:15001 -raft-addr 127.0.0.81:15002 -log-level info -raft-snap-int 1h n1 > n1.log 2>&1 &
P1=$!
trap 'kill -9 $P1 ${P2:-} 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 50); do
  curl -s 127.0.0.81:15001/readyz -o /dev/null -w "%{http_code}" | grep -q 200 && break
  sleep 0.2
done
B0=$(date +%s.%N)
c=$(curl -s -XPOST 127.0.0.81:15001/boot --data-binary @source.sqlite -o /dev/null -w "%{http_code}")
B1=$(date +%s.%N)
echo "boot $c in $(echo "$B1 - $B0" | bc) s"
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
C1=$(cpu $P1)
T0=$(date +%s.%N)
"$BIN" -node-id 2 -http-addr 127.0.0.82:15011 -raft-addr 127.0.0.82:15012 -log-level info -join 127.0.0.81:15002 n2 > n2.log 2>&1 &
P2=$!
for _ in $(seq 1 1200); do
  [ "$(curl -s '127.0.0.82:15011/status?key=store.num_restores')" = 1 ] && break
  sleep 0.05
done
T1=$(date +%s.%N)
echo "transfer $(echo "$T1 - $T0" | bc) s (cpu ticks: leader $(( $(cpu $P1) - C1 )), joiner $(cpu $P2))"
T2=$(date +%s.%N)
cp source.sqlite copy.sqlite && sync copy.sqlite
T3=$(date +%s.%N)
echo "plain copy $(echo "$T3 - $T2" | bc) s"
rm -f copy.sqlite
