#!/usr/bin/env bash
# Idempotent development set-up on Debian: PostgreSQL server binaries, .venv, pggcl[dev].
set -euo pipefail
cd "$(dirname "$0")/.."

have_server_binaries() {
    # The same search as pggcl.testing.find_server_binaries: PATH, then /usr/lib/postgresql/*/bin.
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    local bindir
    for bindir in /usr/lib/postgresql/*/bin; do
        if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then
            return 0
        fi
    done
    return 1
}

if [ -z "${PGGCL_TEST_DSN:-}" ] && ! have_server_binaries; then
    echo "bootstrap: installing PostgreSQL server binaries (apt-get)" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# The web UI's browser tests drive Debian's Chromium (Playwright never downloads a browser).
if [ ! -x /usr/bin/chromium ]; then
    echo "bootstrap: installing chromium (apt-get)" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# The fault tests (tests/faults) run a real PgBouncer in front of their throwaway servers.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    echo "bootstrap: installing pgbouncer (apt-get)" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pgbouncer >/dev/null
    # The package enables a system-wide service on port 6432; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
