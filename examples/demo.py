"""The pggcl demo, runnable from a checkout: `python examples/demo.py` is `pggcl demo`.

The scenes themselves, short and meant to be read, are in pggcl/cli/demo_scenes.py.
Uses $PGGCL_DSN when set, or else starts a throwaway PostgreSQL from local server binaries.
"""

from __future__ import annotations

import sys

from pggcl.cli import main

if __name__ == "__main__":
    main(["demo", *sys.argv[1:]], prog_name="pggcl")
