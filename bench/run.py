"""Run the workloads, print the table, write the JSON.

python -m bench                        # every workload, on a throwaway PostgreSQL
python -m bench --only A,B --json out.json
python -m bench --quick                # tiny sizes: what the smoke test runs
python -m bench --dsn postgresql://... # an existing database (or PGGCL_DSN)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import psycopg

import pggcl
from bench._common import Figure, progress, server, server_version, table

WORKLOADS = {
    "A": "bench.a_throughput",
    "B": "bench.b_handoff",
    "C": "bench.c_contended",
    "D": "bench.d_rate",
    "E": "bench.e_fairness",
    "F": "bench.f_crash",
    "G": "bench.g_scale",
    "H": "bench.h_capacity",
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--only", default="", help="comma-separated workload ids, e.g. A,B")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGGCL_DSN"),
        help="database to run in (default: PGGCL_DSN, else a throwaway PostgreSQL)",
    )
    args = parser.parse_args(argv)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    args.only = only or list(WORKLOADS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    figures: list[Figure] = []
    with server(args.dsn, args.quick) as env:
        machine = _machine(env.dsn)
        progress(f"machine: {machine['summary']}")
        for wid in args.only:
            module: ModuleType = importlib.import_module(WORKLOADS[wid])
            progress(f"== {wid}: {module.TITLE}")
            try:
                figures += module.run(env)
            finally:
                env.cleanup()
    command = shlex.join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])])
    report(figures, machine, started, args.json, {"command": command, "quick": args.quick})
    return 0


def report(
    figures: list[Figure],
    machine: dict[str, Any],
    started: float,
    path: Path | None,
    extra: dict[str, Any],
) -> None:
    """Print the table and the machine line (with the load average before and after); write
    the JSON (``extra`` first) to ``path`` when given."""
    machine["load_average_after"] = list(os.getloadavg())
    elapsed = time.monotonic() - started
    print(table(figures))
    print(
        f"\n{machine['summary']}; {elapsed:.0f} s; load average before/after: "
        f"{_load(machine['load_average_before'])} / {_load(machine['load_average_after'])}"
    )
    if path is not None:
        out = {**extra, "seconds": round(elapsed, 1), "machine": machine,
               "figures": [asdict(f) for f in figures]}  # fmt: skip
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        progress(f"wrote {path}")


def _load(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _machine(dsn: str) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": server_version(dsn),
        "psycopg": psycopg.__version__,
        "asyncpg": asyncpg.__version__,
        "pggcl": pggcl.__version__,
        "commit": commit,
        "load_average_before": list(os.getloadavg()),
    }
    info["summary"] = (
        f"{info['cpus']} CPUs, {info['platform']}, Python {info['python']}, PostgreSQL "
        f"{info['postgresql']}, psycopg {info['psycopg']}, asyncpg {info['asyncpg']}, "
        f"pggcl {info['pggcl']} ({commit or 'no git'})"
    )
    return info
