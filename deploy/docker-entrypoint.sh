#!/bin/sh
# The container's entry point: listen on every interface, advertise the container's host name
# (which other containers on the network resolve), keep the data under /var/lib/raftlite, and
# pass every argument through to raftlited as flags. A flag given as an argument, or as a
# RAFTLITE_* variable, wins over these defaults.
set -eu
host="${RAFTLITE_ADV_HOST:-$(hostname 2>/dev/null || cat /etc/hostname)}"
http_port="${RAFTLITE_HTTP_PORT:-4001}"
raft_port="${RAFTLITE_RAFT_PORT:-4002}"
export RAFTLITE_HTTP_ADDR="${RAFTLITE_HTTP_ADDR:-0.0.0.0:$http_port}"
export RAFTLITE_HTTP_ADV_ADDR="${RAFTLITE_HTTP_ADV_ADDR:-$host:$http_port}"
export RAFTLITE_RAFT_ADDR="${RAFTLITE_RAFT_ADDR:-0.0.0.0:$raft_port}"
export RAFTLITE_RAFT_ADV_ADDR="${RAFTLITE_RAFT_ADV_ADDR:-$host:$raft_port}"
export RAFTLITE_DATA_DIR="${RAFTLITE_DATA_DIR:-/var/lib/raftlite}"
# `docker run raftlite -version` and friends need no data directory.
exec raftlited "$@"
