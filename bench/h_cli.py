"""Bench H with sizes of your own: ``python -m bench.h_cli --help``.

``python -m bench --only H`` runs H at its default sizes (``--quick``: tiny); this sets each
size, e.g. the waiters only, at a tenth of the default:

    .venv/bin/python -m bench.h_cli --parts waiters --waiter-processes 10 --per-process 100
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import asdict
from pathlib import Path

from bench import h_capacity, h_waiters
from bench._common import progress, server
from bench.run import _machine, report


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse(argv: list[str] | None) -> argparse.Namespace:
    d, w = h_capacity.Sizes(), h_waiters.Sizes.full()
    p = argparse.ArgumentParser(prog="python -m bench.h_cli", description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=os.environ.get("PGGCL_DSN"), help="else a throwaway server")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--parts", default=",".join(d.parts), help="throughput,connections,waiters")
    p.add_argument("--clients", type=_ints, default=d.clients, help="client processes: 1,4,16,64")
    p.add_argument("--spreads", type=_ints, default=d.spreads, help="limits spread over: 64,10000")
    p.add_argument("--seconds", type=float, default=d.seconds, help="each measured window")
    p.add_argument("--rounds", type=int, default=d.rounds, help="pggcl/pgbench alternations")
    for field in dataclasses.fields(w):
        value = getattr(w, field.name)
        flag = "--waiter-processes" if field.name == "processes" else f"--{field.name}"
        what = f"waiters at scale: {field.name} (default {value})"
        p.add_argument(flag.replace("_", "-"), dest=f"w_{field.name}", type=type(value),
                       default=value, help=what)  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    waiters = h_waiters.Sizes(**{f.name: getattr(args, f"w_{f.name}")
                                 for f in dataclasses.fields(h_waiters.Sizes)})  # fmt: skip
    parts = tuple(x.strip() for x in args.parts.split(",") if x.strip())
    unknown = set(parts) - set(h_capacity.PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(sorted(unknown))}")
    sizes = h_capacity.Sizes(args.clients, args.spreads, args.seconds, args.rounds, waiters, parts)
    started = time.monotonic()
    with server(args.dsn, quick=False, settings=h_capacity.OWN_SERVER) as env:
        machine = _machine(env.dsn)
        progress(f"machine: {machine['summary']}; {sizes}")
        figures = h_capacity.run(env, sizes)
    report(figures, machine, started, args.json, {"sizes": asdict(sizes)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
