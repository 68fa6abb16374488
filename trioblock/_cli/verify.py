"""``trioblock verify-dir PATH...``: verify a data directory offline, with no node running.

Works on trioblock's data directories and on a Garage node's (same layout and format):
every block file is read and its plaintext hashed (``trioblock._storage.verify``); nothing
is modified. ``--config node.toml`` verifies every data directory of that node.

Links below a data directory are never followed, and a FIFO, device, directory or link
standing where a block file (or an ``aa``/``bb`` directory) should be is reported, never
read. Directories that cannot be listed are reported and the walk goes on.

Exit codes: 0 every block verified; 1 corrupt or unreadable block files, unreadable
directories, or something else than a file in a block's place were found (listed, with
their paths); 2 a path is not a directory or the config is bad.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from .._core.block import DEFAULT_MAX_BLOCK_SIZE
from .._core.config import parse_size
from .._storage import VerifyReport, verify_dir
from ..errors import ConfigError
from .nodefile import load_node_file
from .output import Exit, Output, human_bytes


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, help="data directories to verify")
    parser.add_argument(
        "--config", "-c", type=Path, help="verify every data directory of this node's config"
    )
    parser.add_argument(
        "--max-block-size",
        default=None,
        help="largest plaintext accepted, e.g. 64M (default: the config's, else 64 MiB)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def _report_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "path": str(report.path),
        "blocks": report.blocks,
        "ok": report.ok,
        "bytes_checked": report.bytes_checked,
        "corrupt": [str(p) for p in report.corrupt],
        "unreadable": [{"path": str(p), "error": e} for p, e in report.unreadable],
        "other_files": [str(p) for p in report.other_files],
        "unreadable_dirs": [{"path": str(p), "error": e} for p, e in report.unreadable_dirs],
        "not_regular": [{"path": str(p), "is": what} for p, what in report.not_regular],
        "clean": report.clean,
    }


def _targets(args: argparse.Namespace) -> tuple[list[Path], int]:
    paths = list(args.paths)
    max_size = DEFAULT_MAX_BLOCK_SIZE
    if args.config is not None:
        node = load_node_file(args.config)
        paths += [d.path for d in node.config.data_dirs]
        max_size = node.config.max_block_size
    if args.max_block_size is not None:
        max_size = parse_size(args.max_block_size, "--max-block-size")
    if not paths:
        raise ConfigError("verify-dir", "give one or more data directories, or --config")
    return paths, max_size


def run(args: argparse.Namespace) -> int:
    out = Output(json_mode=args.json)
    try:
        paths, max_size = _targets(args)
    except ConfigError as exc:
        out.error(str(exc))
        return Exit.USAGE
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        out.error(f"not a directory: {missing[0]}")
        return Exit.USAGE
    reports: list[VerifyReport] = []
    try:
        with out.progress("tally") as progress:
            for path in paths:
                task = progress.add_task(escape(str(path)), total=1.0, tally="")

                def update(fraction: float, report: VerifyReport, task: Any = task) -> None:
                    progress.update(
                        task,
                        completed=fraction,
                        tally=f"{report.ok} ok, {len(report.corrupt)} corrupt, "
                        f"{human_bytes(report.bytes_checked)}",
                    )

                reports.append(verify_dir(path, progress=update, max_block_size=max_size))
    except KeyboardInterrupt:
        out.error("interrupted")
        return Exit.INTERRUPTED
    clean = all(r.clean for r in reports)
    if out.json:
        out.emit_json({"clean": clean, "directories": [_report_json(r) for r in reports]})
    else:
        _render(out, reports)
    return Exit.OK if clean else Exit.FAILED


def _render(out: Output, reports: list[VerifyReport]) -> None:
    table = Table(title="verified", title_justify="left")
    table.add_column("directory", overflow="fold")
    table.add_column("blocks", justify="right")
    table.add_column("ok", justify="right")
    table.add_column("corrupt", justify="right")
    table.add_column("unreadable", justify="right")
    table.add_column("other files", justify="right")
    table.add_column("bytes read", justify="right")
    for r in reports:
        bad = "red" if r.corrupt else ""
        table.add_row(
            escape(str(r.path)),
            str(r.blocks),
            str(r.ok),
            f"[{bad}]{len(r.corrupt)}[/]" if bad else "0",
            str(len(r.unreadable)),
            str(len(r.other_files)),
            human_bytes(r.bytes_checked),
        )
    out.print(table)
    for r in reports:
        for path in r.corrupt:
            out.say(f"corrupt: {path}")
        for path, error in r.unreadable:
            out.say(f"unreadable: {path}: {error}")
        for path, error in r.unreadable_dirs:
            out.say(f"unreadable directory: {path}: {error}")
        for path, what in r.not_regular:
            out.say(f"not a block file: {path} is {what} (never read)")
    if any(r.corrupt for r in reports):
        out.note(
            "with the node running, `trioblock scrub start` quarantines these and fetches "
            "good copies from the other nodes"
        )


__all__ = ["configure", "run"]
