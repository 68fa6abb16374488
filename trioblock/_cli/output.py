"""What the CLI prints and the exit codes it returns.

Rules kept here:

- Exit codes scripts can trust (:class:`Exit`): 0 success, 1 the operation failed or
  the block was not found, 2 bad usage or configuration, 3 the node could not be reached
  or refused our credentials; 130 after Ctrl-C.
- Results go to stdout, as ``rich`` tables for people or, with ``--json``, as one JSON
  document for machines (and nothing else on stdout). Progress bars, notes and errors go
  to stderr, so ``trioblock get HASH > FILE`` and ``--json`` pipelines stay clean.
- When stdout is not a terminal, tables are rendered without colour, 120 columns wide
  (unless ``COLUMNS`` says otherwise), so hashes are not cut in logs and pipes, and
  without trailing spaces on their lines.
- Under ``--json`` an error is one JSON line on stderr, ``{"error": "…"}``.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .durations import parse_duration

#: Width of tables when stdout is not a terminal and ``COLUMNS`` is unset.
PIPE_WIDTH = 120


class Exit(enum.IntEnum):
    """The CLI's exit codes."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


class CliError(Exception):
    """Stop the command with ``code`` after printing ``message`` on stderr."""

    def __init__(self, code: Exit, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def _console(stream: Any, *, stderr: bool) -> Console:
    interactive = hasattr(stream, "isatty") and stream.isatty()
    width = None if interactive or "COLUMNS" in os.environ else PIPE_WIDTH
    # Messages on stderr are never re-wrapped: a long path or hash stays on one line.
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=stderr)


class Output:
    """The two consoles of a command and its output mode (``json`` or tables)."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json = json_mode
        self.out = _console(sys.stdout, stderr=False)
        self.err = _console(sys.stderr, stderr=True)

    @property
    def interactive(self) -> bool:
        """Whether progress bars are worth drawing (stderr is a terminal, no ``--json``)."""
        return not self.json and self.err.is_terminal

    def progress(self, detail_field: str) -> Progress:
        """A live progress bar on stderr (drawn only when interactive); each task carries
        a ``detail_field`` text shown after the bar."""
        return Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn(f"{{task.fields[{detail_field}]}}"),
            console=self.err,
            disable=not self.interactive,
        )

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def print(self, *renderables: Any) -> None:
        """Tables and text on stdout; in a pipe or file, without the spaces that pad
        the end of table lines."""
        if self.out.is_terminal:
            self.out.print(*renderables)
            return
        with self.out.capture() as captured:
            self.out.print(*renderables)
        sys.stdout.write("\n".join(line.rstrip() for line in captured.get().split("\n")))
        sys.stdout.flush()

    def say(self, message: str) -> None:
        """A one-line result on stdout, never re-wrapped (hashes stay whole)."""
        self.out.print(escape(message), soft_wrap=True)

    def note(self, message: str) -> None:
        """A remark for the person at the terminal (stderr), never for machines."""
        self.err.print(escape(message))

    def error(self, message: str) -> None:
        """The command failed: ``trioblock: MESSAGE`` on stderr; under ``--json``, one
        JSON line ``{"error": MESSAGE}`` on stderr instead (stdout keeps only results)."""
        if self.json:
            sys.stderr.write(json.dumps({"error": message}) + "\n")
            sys.stderr.flush()
            return
        self.err.print(f"[bold red]trioblock:[/] {escape(message)}")


def key_value_table(title: str | None, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table of labels and values."""
    table = Table(title=title, show_header=False, box=None, title_justify="left", pad_edge=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    return table


def human_bytes(n: int | float | None) -> str:
    """``1536`` → ``1.5 KiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """``3725`` → ``1h 2m``; ``42.5`` → ``42s``."""
    if seconds is None:
        return "-"
    s = round(abs(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def relative_time(msec: int | None, now_msec: int) -> str:
    """A node time shown relative to the node's ``now``: ``in 5m 3s``, ``2h 1m ago``."""
    if msec is None:
        return "-"
    delta = (msec - now_msec) / 1000
    if abs(delta) < 1:
        return "now"
    return f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(delta)} ago"


def timestamp(msec: int | None) -> str:
    """A node time as local date and time (node times are wall-clock milliseconds)."""
    if msec is None:
        return "-"
    when = datetime.datetime.fromtimestamp(msec / 1000).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S")


def duration_arg(text: str) -> float:
    """``argparse`` type for a duration option (``--timeout 30``, ``--interval 0.5``)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


__all__ = [
    "CliError",
    "Exit",
    "Output",
    "duration_arg",
    "human_bytes",
    "human_duration",
    "key_value_table",
    "parse_duration",
    "relative_time",
    "timestamp",
]
