#!/usr/bin/env bash
# pggcl through a real Patroni failover, on loopback, with throwaway data.
#
#   bash examples/patroni/run.sh        # exit 0: every check held; 1: one failed (it says
#                                       # which); 77: patroni/etcd missing and not root
#
# Starts etcd and two Patroni nodes (PostgreSQL with a synchronous standby) on free 127.0.0.1
# ports, installs pggcl's schema on the leader, then runs check.py: a holder and two queued
# waiters (sync client, async client, `pggcl run`) on a multi-host DSN while the leader node
# is lost (its Patroni and PostgreSQL SIGKILLed) and Patroni promotes the replica. Everything
# it started is stopped and its directory removed on exit, whatever happened.
#
# Needs Debian's `patroni` and `etcd-server` (installed here when run as root and missing) and
# pggcl in PGGCL_PYTHON (default: the repository's .venv/bin/python). As root, PostgreSQL and
# Patroni run as the `postgres` OS user (initdb refuses root).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PGGCL_PYTHON:-$ROOT/.venv/bin/python}
say() { echo "run.sh: [${SECONDS}s] $*" >&2; }

# --- Packages (the pattern of scripts/bootstrap.sh) ----------------------------------------
have_stack() { command -v patroni >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1; }
if ! have_stack; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "needs Debian's patroni and etcd-server (apt-get install -y patroni etcd-server as root)"
        exit 77
    fi
    say "installing patroni and etcd-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq patroni etcd-server >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq patroni etcd-server >/dev/null; }
fi

BIN_DIR=$("$PY" -c 'from pggcl.testing import find_server_binaries; print(find_server_binaries())')

# --- A throwaway directory, free ports, and clean-up on every exit ---------------------------
# PGGCL_PATRONI_WORK: the directory to use (made here, must not exist; removed at the end), so
# that a caller can clean up even after this script was SIGKILLed (tests/faults/test_patroni.py).
if [ -n "${PGGCL_PATRONI_WORK:-}" ]; then
    WORK=$PGGCL_PATRONI_WORK
    mkdir "$WORK"
else
    WORK=$(mktemp -d /tmp/pggcl-patroni-XXXXXX)
fi
chmod 755 "$WORK"
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$WORK"
    # setpriv execs (no fork, unlike runuser): $! is Patroni's own pid.
    RUN_AS=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
read -r ETCD_PORT ETCD_PEER PG0 PG1 REST0 REST1 < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
PIDS=()  # etcd, node0's patroni, node1's patroni

cleanup() {
    local status=$?
    set +e
    for name in node0 node1; do  # a clean stop first: Patroni stops its PostgreSQL
        [ -f "$WORK/$name.pid" ] && kill -TERM "$(cat "$WORK/$name.pid")" 2>/dev/null
    done
    for _ in $(seq 100); do
        alive=0
        for name in node0 node1; do
            [ -f "$WORK/$name.pid" ] && kill -0 "$(cat "$WORK/$name.pid")" 2>/dev/null && alive=1
        done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for name in node0 node1; do
        [ -f "$WORK/$name.pid" ] && kill -KILL "$(cat "$WORK/$name.pid")" 2>/dev/null
        if [ -f "$WORK/$name/data/postmaster.pid" ]; then
            "${RUN_AS[@]}" "$BIN_DIR/pg_ctl" stop -m immediate -D "$WORK/$name/data" >/dev/null 2>&1
        fi
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$status" -ne 0 ] && [ -z "${KEEP_LOGS:-}" ]; then
        for log in "$WORK"/*.log; do
            [ -f "$log" ] && { say "--- tail of $(basename "$log")"; tail -n 15 "$log" >&2; }
        done
    fi
    if [ -n "${KEEP_WORK:-}" ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- etcd ----------------------------------------------------------------------------------
etcd --name etcd0 --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "etcd0=http://127.0.0.1:$ETCD_PEER" \
    >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
echo $! >"$WORK/etcd.pid"

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then say "timed out after ${seconds} s: $what"; exit 1; fi
        sleep 0.2
    done
}
wait_for 30 "etcd answers" curl -sf "http://127.0.0.1:$ETCD_PORT/health"
say "etcd answers on port $ETCD_PORT"

# --- Two Patroni nodes ---------------------------------------------------------------------
start_node() {  # start_node NAME PG_PORT REST_PORT
    local name=$1 pg_port=$2 rest_port=$3
    mkdir -p "$WORK/$name"
    sed -e "s|@NAME@|$name|g" -e "s|@WORK@|$WORK|g" -e "s|@BIN_DIR@|$BIN_DIR|g" \
        -e "s|@PG_PORT@|$pg_port|g" -e "s|@REST_PORT@|$rest_port|g" \
        -e "s|@ETCD_PORT@|$ETCD_PORT|g" "$HERE/patroni.yml.in" >"$WORK/$name.yml"
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$WORK/$name" "$WORK/$name.yml"
    "${RUN_AS[@]}" env HOME="$WORK/$name" patroni "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
    echo $! >"$WORK/$name.pid"
    disown  # stopped by pid in cleanup; and no "Killed" notice when the failover kills it
}
rest_ok() { curl -sf -o /dev/null "http://127.0.0.1:$1$2"; }

start_node node0 "$PG0" "$REST0"
wait_for 60 "node0 leads" rest_ok "$REST0" /primary
say "node0 bootstrapped the cluster and leads"
start_node node1 "$PG1" "$REST1"
# /sync answers 200 only on the synchronous standby: every commit from now on is on both.
wait_for 60 "node1 is the synchronous standby" rest_ok "$REST1" /sync
say "node0 leads (port $PG0), node1 is its synchronous standby (port $PG1)"

DSN="postgresql://postgres@127.0.0.1:$PG0,127.0.0.1:$PG1/postgres?target_session_attrs=read-write"
"$(dirname "$PY")/pggcl" --dsn "$DSN" db upgrade >&2

# --- The clients through the failover ------------------------------------------------------
"$PY" "$HERE/check.py" --dsn "$DSN" --work "$WORK" --rest "$REST0,$REST1" --nodes node0,node1
say "done; stopping everything"
