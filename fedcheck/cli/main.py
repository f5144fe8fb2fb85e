"""The ``fedcheck`` command: argument parsing and dispatch only.

Each sub-command lives in its own module under :mod:`fedcheck.cli` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (``(args) -> int``).
Typed :class:`fedcheck.errors.FedcheckError` exceptions become a one-line message and exit code 2;
anything else is a bug and keeps its traceback.

gRPC's C core writes its own lines (``I1128 ... Handshake failed ...``) straight to stderr, past Python
logging and ``[logging] file``; :func:`main` sets ``GRPC_VERBOSITY=ERROR`` before any sub-command imports
grpc (the C core reads it once, at import), unless the operator set it.

A closed stdout (``fedcheck pki sign-csr ... | head``, ``... | grep -q``) ends the command quietly with exit
code 141 (128 + SIGPIPE, what a shell reports for other tools killed by SIGPIPE) instead of a
``BrokenPipeError`` traceback. SIGPIPE itself stays ignored (Python's default): a node or coordinator must not
die because a peer closed a socket.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from fedcheck import __version__
from fedcheck.errors import FedcheckError

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main", "quiet_grpc_core"]

#: exit code when stdout is closed by the reader (128 + SIGPIPE, as the shell reports for ``yes | head``)
EXIT_BROKEN_PIPE = 141

#: Sub-command modules, in the order ``fedcheck --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "fedcheck.cli.demo",
    "fedcheck.cli.screen",
    "fedcheck.cli.node",
    "fedcheck.cli.coordinator",
    "fedcheck.cli.watchlist",
    "fedcheck.cli.query",
    "fedcheck.cli.bench",
    "fedcheck.cli.pki",
    "fedcheck.cli.audit",
    "fedcheck.cli.conformance",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcheck",
        description="Federated privacy-preserving watchlist checks.",
    )
    parser.add_argument("--version", action="version", version=f"fedcheck {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def quiet_grpc_core() -> None:
    """Only errors from gRPC's C core (an operator's own ``GRPC_VERBOSITY`` wins). Effective only before
    ``grpc`` is first imported; nothing this module imports at load time imports it."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            # a reader that went away fails here (also after --help / --version, which exit via SystemExit),
            # not in the interpreter's exit-time flush, which could only print "Exception ignored"
            if sys.stdout is not None:  # None when started with stdout closed (`fedcheck ... >&-`)
                sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    """Point the stdout file descriptor at /dev/null, so the interpreter's final flush of what is still
    buffered cannot raise again ("Exception ignored ... BrokenPipeError")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced stdout (tests, embedding): nothing to redirect
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    quiet_grpc_core()  # before build_parser(): the sub-command modules import grpc
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except FedcheckError as exc:
        print(f"fedcheck: error: {exc.message} [{exc.reason}]", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedcheck: interrupted", file=sys.stderr)
        return 130
