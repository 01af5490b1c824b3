#!/usr/bin/env bash
# Bootstrap, then run the test suite; arguments go to pytest, its exit code comes back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q "$@"
