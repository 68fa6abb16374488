"""The ``trioblock`` command: argument parsing and dispatch to subcommands.

Each subcommand lives in its own module under ``trioblock/_cli`` and registers itself
through :data:`COMMANDS`; ``main`` returns the process exit code (0 success, 1 failure
of the requested operation, 2 bad usage or configuration).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import demo

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: name -> (configure parser, run(args) -> exit code)
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, tuple[str, Command]] = {
    "demo": (
        "run a node on the embedded default and narrate what it does",
        (demo.configure, demo.run),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioblock",
        description="trioblock: a content-addressed, verified, replicated block store on Trio",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, (configure, _run)) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def setup_logging(verbosity: int) -> None:
    level = (
        logging.WARNING if verbosity < 0 else (logging.INFO if verbosity == 0 else logging.DEBUG)
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _help, (_configure, run) = COMMANDS[args.command]
    return run(args)
