"""``fedcheck bench psi|similarity``: long measurements, kept out of ``make test``.

Each benchmark module under :mod:`fedcheck.bench` exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["register"]

BENCHMARKS: dict[str, tuple[str, str]] = {
    "psi": ("fedcheck.bench.psi", "OPRF-PSI throughput vs raw libsodium and OpenMined PSI"),
    "similarity": ("fedcheck.bench.similarity", "Paillier similarity throughput, leakage, matching quality"),
}


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="run a benchmark (see docs/benchmarks.md)")
    bench_sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        p = bench_sub.add_parser(name, help=help_text)
        p.set_defaults(func=_runner(module), _bench_module=module)
        importlib.import_module(module).add_arguments(p)


def _runner(module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).run(args))

    return run
