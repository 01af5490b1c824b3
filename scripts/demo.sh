#!/usr/bin/env bash
# Bootstrap, then run the demo (a throwaway PostgreSQL unless PGGCL_DSN is set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if .venv/bin/pggcl demo --help >/dev/null 2>&1; then
    exec .venv/bin/pggcl demo "$@"
fi
exec .venv/bin/python examples/demo.py "$@"
