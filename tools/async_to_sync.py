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
# Each async source and the sync module generated from it.
PAIRS: list[tuple[Path, Path]] = [
    (ROOT / "pggcl" / "client" / "client_async.py", ROOT / "pggcl" / "client" / "client_sync.py"),
]

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



def convert(source: str, path: Path) -> str:
    body = source[source.index('"""', source.index('"""') + 3) + 3 :]  # drop the docstring
    body = re.sub(r"\basync (def|with|for) ", r"\1 ", body)
    body = re.sub(r"\bawait ", "", body)
    for old, new in NAMES.items():
        body = re.sub(rf"\b{re.escape(old)}\b", new, body)
    header = (
        f'"""GENERATED from ``{path.relative_to(ROOT)}`` by ``tools/async_to_sync.py``: do not\n'
        'edit; change the async source (it says what this module is for) and run the tool.\n"""\n'
    )
    return header + body


def formatted(text: str, target: Path) -> str:
    """``text`` with its imports sorted (renamed modules sort elsewhere) and formatted."""
    ruff = str(Path(sys.executable).parent / "ruff")
    for command in (["check", "--select", "I", "--fix", "--quiet"], ["format"]):
        text = subprocess.run(
            [ruff, *command, "--stdin-filename", str(target), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return text


def main(argv: list[str]) -> int:
    stale = 0
    for source, target in PAIRS:
        generated = formatted(convert(source.read_text(encoding="utf-8"), source), target)
        if "--check" not in argv:
            target.write_text(generated, encoding="utf-8")
        elif not target.exists() or target.read_text(encoding="utf-8") != generated:
            print(f"{target} is out of date: run python tools/async_to_sync.py", file=sys.stderr)
            stale += 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
