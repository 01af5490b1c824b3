"""Generate the sync modules from their async sources: ``*_async.py`` -> ``*_sync.py``.

The async source is the one to edit. An AST transform (comments kept, by ``ast_comments``):
``async def`` / ``async with`` / ``async for`` lose their ``async``, ``await x`` becomes ``x``,
and names are mapped through the table below (the async modules, classes and helpers to their
sync twins). What differs in behaviour between the two worlds lives behind
``pggcl.client._acompat`` / ``pggcl.client._compat`` and the two drivers, which export the same
names. The output is formatted with ruff. ``--check`` exits 1 when a generated file is not
current (the test suite runs it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import ast_comments  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]

# Each async source and the sync module generated from it.
PAIRS: list[tuple[Path, Path]] = [
    (ROOT / "pggcl" / "client" / f"{name}_async.py", ROOT / "pggcl" / "client" / f"{name}_sync.py")
    for name in ("pool", "session", "port", "runner", "client")
]
# The behaviour suite that runs against both clients (tests/client/_acompat.py maps to _compat).
PAIRS.append(
    (
        ROOT / "tests" / "client" / "test_behaviour_async.py",
        ROOT / "tests" / "client" / "test_behaviour_sync.py",
    )
)

# Names (identifiers, attribute names, and the parts of dotted module names) that differ.
NAMES = {
    "AsyncClient": "Client",
    "AsyncPort": "SyncPort",
    "_acompat": "_compat",
    "asyncpg_driver": "psycopg_driver",
    "pool_async": "pool_sync",
    "session_async": "session_sync",
    "port_async": "port_sync",
    "runner_async": "runner_sync",
    "client_async": "client_sync",
    "asynccontextmanager": "contextmanager",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}


class _ToSync(ast.NodeTransformer):
    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name = NAMES.get(node.name, node.name)
        return ast.copy_location(ast.FunctionDef(**_fields(node)), node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.With(**_fields(node)), node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.For(**_fields(node)), node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self.generic_visit(node)
        return node.value

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        node.is_async = 0
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = NAMES.get(node.id, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        node.attr = NAMES.get(node.attr, node.attr)
        return node

    def visit_alias(self, node: ast.alias) -> ast.AST:
        node.name = _dotted(node.name)
        if node.asname:
            node.asname = NAMES.get(node.asname, node.asname)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        self.generic_visit(node)
        if node.module:
            node.module = _dotted(node.module)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.generic_visit(node)
        node.name = NAMES.get(node.name, node.name)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name = NAMES.get(node.name, node.name)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        # A string that is exactly a mapped name (in __all__, say) is mapped; others stay.
        if isinstance(node.value, str):
            node.value = NAMES.get(node.value, node.value)
        return node


def _fields(node: ast.AST) -> dict[str, Any]:
    return {name: getattr(node, name) for name in node._fields if hasattr(node, name)}


def _dotted(name: str) -> str:
    return ".".join(NAMES.get(part, part) for part in name.split("."))


def convert(source: str, path: Path) -> str:
    """The sync module for the async ``source`` read from ``path``."""
    tree = ast_comments.parse(source)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body.pop(0)  # the source's docstring: the header below points to it
    tree = ast.fix_missing_locations(_ToSync().visit(tree))
    header = (
        f'"""GENERATED from ``{path.relative_to(ROOT)}`` by ``tools/async_to_sync.py``: do not\n'
        'edit; change the async source (it says what this module is for) and run the tool.\n"""\n'
    )
    return header + str(ast_comments.unparse(tree)) + "\n"


def formatted(text: str, target: Path) -> str:
    """``text`` with its imports sorted (renamed modules sort elsewhere) and formatted."""
    ruff = str(Path(sys.executable).parent / "ruff")
    for command in (["check", "--select", "I,F401", "--fix", "--quiet"], ["format"]):
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
