"""The ``trioblock`` command: argument parsing and dispatch to subcommands.

Each subcommand lives in a module under ``trioblock/_cli`` and registers itself through
:data:`COMMANDS`; ``main`` returns the process exit code (see
:class:`~trioblock._cli.output.Exit`): 0 success, 1 failure of the requested operation
(or block not found), 2 bad usage or configuration, 3 the node cannot be reached or
refused our credentials, 130 after Ctrl-C.

Logging goes to stderr: INFO and up for ``serve``, WARNING and up for the other
commands (whose output is their result); each ``-v`` shows one level more.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from . import blocks, demo, dirs, layout, maintenance, operations, refs, reports, serve, verify
from .output import Exit

EXIT_OK = Exit.OK
EXIT_FAILURE = Exit.FAILED
EXIT_USAGE = Exit.USAGE
EXIT_UNREACHABLE = Exit.UNREACHABLE

#: name -> (configure parser, run(args) -> exit code)
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, tuple[str, Command]] = {
    "demo": (
        "run a node on the embedded default and narrate what it does",
        (demo.configure, demo.run),
    ),
    "serve": (
        "run a node from its config file until SIGINT/SIGTERM",
        (serve.configure, serve.run),
    ),
    "status": (
        "show a running node's state: queues, errors, scrub, disks, counters",
        (reports.configure_status, reports.run_status),
    ),
    "workers": (
        "list a running node's background workers",
        (reports.configure_workers, reports.run_workers),
    ),
    "errors": (
        "list the blocks whose resync keeps failing",
        (reports.configure_errors, reports.run_errors),
    ),
    "retry-now": (
        "retry the resync of a block in error (or --all) now",
        (blocks.configure_retry_now, blocks.run_retry_now),
    ),
    "purge": (
        "forget an unrecoverable block: references, errors, queue entries, local copies",
        (blocks.configure_purge, blocks.run_purge),
    ),
    "put": (
        "store a file as one block and print its hash",
        (blocks.configure_put, blocks.run_put),
    ),
    "get": (
        "write a block to stdout (or -o FILE)",
        (blocks.configure_get, blocks.run_get),
    ),
    "scrub": (
        "control the scrub: start, pause DURATION, resume, cancel, tranquility N, status",
        (operations.configure_scrub, operations.run_scrub),
    ),
    "repair": (
        "queue every block known to the node for resync (or: repair refcounts), with progress",
        (operations.configure_repair, operations.run_repair),
    ),
    "rebalance": (
        "move blocks to their primary data directory, with progress",
        (operations.configure_operation, operations.run_rebalance),
    ),
    "ref": (
        "cluster references through the node: add|remove HASH OWNER, list HASH, sync",
        (refs.configure, refs.run),
    ),
    "layout": (
        "change the cluster's nodes: show, assign, remove, revert, apply, status, history",
        (layout.configure, layout.run),
    ),
    "set-resync": (
        "change the number of resync workers or their tranquility",
        (blocks.configure_set_resync, blocks.run_set_resync),
    ),
    "block": (
        "inspect a block: info HASH [--cluster]",
        (maintenance.configure_block, maintenance.run_block),
    ),
    "stats": (
        "per node blocks, bytes, references, queues, free space; the cluster's capacity",
        (maintenance.configure_stats, maintenance.run_stats),
    ),
    "meta": (
        "the metadata database: snapshot, list, restore (node stopped)",
        (maintenance.configure_meta, maintenance.run_meta),
    ),
    "dir": (
        "a node's data directories: clear PATH (a full or failing one back to ok)",
        (dirs.configure, dirs.run),
    ),
    "verify-dir": (
        "verify every block of a data directory offline (ours or Garage's)",
        (verify.configure, verify.run),
    ),
}

#: Commands whose logging starts at INFO (the others start at WARNING).
_CHATTY = frozenset({"serve"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioblock",
        description="trioblock: a content-addressed, verified, replicated block store on Trio",
        epilog="exit codes: 0 ok, 1 operation failed or not found, 2 usage or config error, "
        "3 cannot reach or authenticate with the node",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--version", action="version", version=f"trioblock {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, (configure, _run)) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        configure(command)
        # Also after the command (``trioblock status -v``), counted with the one before it.
        command.add_argument(
            "-v",
            "--verbose",
            dest="command_verbose",
            action="count",
            default=0,
            help="more logging (as trioblock -v COMMAND)",
        )
    return parser


def setup_logging(verbosity: int) -> None:
    """``verbosity`` 0: INFO; 1+: DEBUG; negative: WARNING."""
    level = (
        logging.WARNING if verbosity < 0 else (logging.INFO if verbosity == 0 else logging.DEBUG)
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    if args.command != "demo":  # demo configures its own narration
        verbosity = args.verbose + args.command_verbose
        setup_logging(verbosity - (0 if args.command in _CHATTY else 1))
    _help, (_configure, run) = COMMANDS[args.command]
    return int(run(args))
