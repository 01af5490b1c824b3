#!/usr/bin/env bash
# Bootstrap, then run the whole test suite; arguments go to pytest, its exit code comes back.
# Four worker processes (pytest-xdist), each with its own throwaway PostgreSQL: most tests wait
# on the server, the network or a browser, so four fit on two cores. Each test file stays on
# one worker (tests/conftest.py); PGGCL_TEST_WORKERS=0 runs everything in one process.
# PGGCL_PG_BIN picks the PostgreSQL (a bin directory, or `embedded`); pytest's last lines name it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
workers="${PGGCL_TEST_WORKERS:-4}"
if [ "$workers" = "0" ]; then
    exec .venv/bin/python -m pytest -q "$@"
fi
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadgroup "$@"
