"""Generate the sync client from the async one: ``pggcl/_client_async.py`` -> ``_client_sync.py``.

The async source is the one to edit. This drops ``async``/``await`` and maps the names that
differ between the two worlds (the table below); what differs in behaviour lives behind
``pggcl._acompat`` / ``pggcl._compat`` and the two driver ports. The output is formatted with
ruff. ``--check`` exits 1 when the generated file is not current (the test suite runs it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "pggcl" / "client" / "client_async.py"
TARGET = ROOT / "pggcl" / "client" / "client_sync.py"

NAMES = {
    "AsyncClient": "Client",
    "AsyncpgPort": "PsycopgPort",
    "session_async": "session_sync",
    "_acompat": "_compat",
    "run_async": "run_sync",
    "asynccontextmanager": "contextmanager",
    "AsyncIterator": "Iterator",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}

HEADER = '''"""The sync client. GENERATED from ``pggcl/_client_async.py`` by
``tools/async_to_sync.py``: do not edit; change the async source and run the tool.
"""
'''


def convert(source: str) -> str:
    body = source[source.index('"""', source.index('"""') + 3) + 3 :]  # drop the docstring
    body = re.sub(r"\basync (def|with|for) ", r"\1 ", body)
    body = re.sub(r"\bawait ", "", body)
    for old, new in NAMES.items():
        body = re.sub(rf"\b{re.escape(old)}\b", new, body)
    return HEADER + body


def formatted(text: str) -> str:
    """``text`` with its imports sorted (renamed modules sort elsewhere) and formatted."""
    ruff = str(Path(sys.executable).parent / "ruff")
    for command in (["check", "--select", "I", "--fix", "--quiet"], ["format"]):
        text = subprocess.run(
            [ruff, *command, "--stdin-filename", str(TARGET), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return text


def main(argv: list[str]) -> int:
    generated = formatted(convert(SOURCE.read_text(encoding="utf-8")))
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != generated:
            print(f"{TARGET} is out of date: run python tools/async_to_sync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(generated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
