#!/usr/bin/env bash
# Bootstrap (PostgreSQL server binaries, .venv), then run `pggcl demo`: a throwaway
# PostgreSQL unless PGGCL_DSN is set. Arguments go to `pggcl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/pggcl demo "$@"
