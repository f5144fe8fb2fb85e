"""``fedcheck demo``: run the demo federation (what ``make demo`` calls)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="start a 4-State demo federation on loopback and run one round")
    p.add_argument("--travellers", type=int, default=300, help="manifest size (default: %(default)s)")
    p.add_argument("--mode", choices=["exact", "cardinality"], default="exact")
    p.add_argument("--var", type=Path, default=None, help="working directory (default: ./var, wiped first)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedcheck.demo.run import run_demo

    result = run_demo(travellers=args.travellers, var=args.var, mode=args.mode)
    return 0 if result.ok else 1
