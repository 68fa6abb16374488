"""Read-only views of a running node: ``status``, ``workers`` and ``errors``.

Each fetches one admin reply (``errors`` follows its pages) and shows it as ``rich``
tables, or as JSON with ``--json``. They exit 0 whenever the node answered, whatever the
node's health: scripts read the JSON (``resync_errors_len``, worker states) to decide.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from .admin_service import REF_SYNC_WORKER
from .client import AdminClient, add_target_arguments, run_session
from .layout import layout_rows
from .output import (
    Exit,
    Output,
    human_bytes,
    human_duration,
    key_value_table,
    relative_time,
)

# ---------------------------------------------------------------------------------------
# status


def _dir_state(d: dict[str, Any]) -> str:
    """A data directory's health as a table cell: ``ok``, or the state in bold red and
    the failed operations in a row."""
    state = str(d.get("state", "ok"))
    if state == "ok":
        return "ok" if not d.get("errors") else f"ok ({d['errors']} errors)"
    return f"[bold red]{escape(state)}[/] ({d.get('errors', 0)} errors)"


def configure_status(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)


def scrub_summary(scrub: dict[str, Any], now: int) -> str:
    state = scrub.get("state", "?")
    if state in ("running", "paused"):
        text = f"{state}, {scrub['progress']:.1%} ({scrub['blocks_checked']} blocks)"
        if state == "paused":
            text += f", resumes {relative_time(scrub.get('paused_until'), now)}"
        return text
    last = scrub.get("last_completed")
    text = f"{state}, last completed {relative_time(last, now)}" if last else "never completed"
    if scrub.get("next_run") is not None:
        text += f", next run {relative_time(scrub['next_run'], now)}"
    return text


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def stored_summary(stored: dict[str, Any] | None) -> str:
    """``1234 blocks, 5.6 MiB`` (and whether the figure is still being counted)."""
    if stored is None:
        return "-"
    text = f"{plural(stored['blocks'], 'block', 'blocks')}, {human_bytes(stored['bytes'])}"
    return text if stored["exact"] else f"{text} (estimate: counting)"


def render_status(out: Output, status: dict[str, Any]) -> None:
    now = status["now"]
    layout = status["layout"]
    level = status["compression_level"]
    scrub = status.get("scrub", {})
    rows: list[tuple[str, Any]] = [
        ("node", status["node_id"]),
        ("uptime", human_duration(status["uptime"])),
        (
            "layout",
            f"{len(layout['nodes'])} node(s): {', '.join(layout['nodes'])}; "
            f"replication {layout['replication_factor']}, write quorum {layout['write_quorum']}",
        ),
        *layout_rows(layout),
        ("compression", "off" if level is None else f"zstd level {level}"),
        ("stored", stored_summary(status.get("stored"))),
        ("referenced blocks", f"{status['rc_len']} rc entries"),
        (
            "references",
            "-"
            if status.get("ref_len") is None
            else plural(status["ref_len"], "entry", "entries") + " (tombstones included)",
        ),
        ("resync queue", status["resync_queue_len"]),
        ("resync errors", status["resync_errors_len"]),
        (
            "resync workers",
            f"{status['resync_workers']} (tranquility {status['resync_tranquility']})",
        ),
        ("scrub", scrub_summary(scrub, now)),
        ("scrub corruptions", scrub.get("corruptions_found", 0)),
    ]
    for name, op in sorted(status.get("operations", {}).items()):
        if op["state"] == "running":
            rows.append((name, f"running, {(op.get('progress') or 0):.1%}: {op.get('info')}"))
        elif op["state"] in ("done", "failed"):
            rows.append((name, f"{op['state']} {relative_time(op.get('finished_at'), now)}"))
    out.print(key_value_table(None, rows))
    out.print()

    dirs = Table(title="data directories", title_justify="left")
    dirs.add_column("path", overflow="fold")
    dirs.add_column("mode")
    dirs.add_column("size", justify="right")
    dirs.add_column("free", justify="right")
    dirs.add_column("used", justify="right")
    dirs.add_column("state")
    for d in status["data_dirs"]:
        mode = "read-only" if d.get("read_only") else "read-write"
        state = _dir_state(d)
        if "error" in d:
            dirs.add_row(escape(d["path"]), mode, "-", "-", escape(d["error"]), state)
            continue
        used = 1 - d["free"] / d["total"] if d["total"] else 0.0
        dirs.add_row(
            escape(d["path"]),
            mode,
            human_bytes(d["total"]),
            human_bytes(d["free"]),
            f"{used:.0%}",
            state,
        )
    out.print(dirs)
    for d in status["data_dirs"]:
        if d.get("state", "ok") != "ok":
            fix = (
                "free space there (the node notices by itself)"
                if d["state"] == "full"
                else "fix the disk: the node probes it, or `trioblock dir clear PATH`"
            )
            out.note(
                f"{d['path']} is {d['state']}: no new blocks go there "
                f"(last error: {d.get('last_error')}); {fix}"
            )
    out.print()

    counters = status["metrics"]
    out.print(
        key_value_table(
            "counters since start",
            [
                ("puts / gets", f"{counters.get('puts', 0)} / {counters.get('gets', 0)}"),
                (
                    "served puts / gets",
                    f"{counters.get('puts_served', 0)} / {counters.get('gets_served', 0)}",
                ),
                (
                    "bytes written / read",
                    f"{human_bytes(counters.get('bytes_written', 0))} / "
                    f"{human_bytes(counters.get('bytes_read', 0))}",
                ),
                (
                    "resyncs (errors)",
                    f"{counters.get('resyncs', 0)} ({counters.get('resync_errors', 0)})",
                ),
                ("corruptions", counters.get("corruptions", 0)),
                ("deletes", counters.get("deletes", 0)),
            ],
        )
    )


async def _status(client: AdminClient, out: Output) -> int:
    status = await client.call("status")
    if out.json:
        out.emit_json(status)
    else:
        render_status(out, status)
    return Exit.OK


def run_status(args: argparse.Namespace) -> int:
    return run_session(args, _status)


# ---------------------------------------------------------------------------------------
# workers


def configure_workers(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)


def workers_table(workers: list[dict[str, Any]], now: int) -> Table:
    table = Table()
    table.add_column("worker", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("queue", justify="right")
    table.add_column("tranq.", justify="right")
    table.add_column("progress", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("info / last error", overflow="fold")
    styles = {"busy": "green", "throttled": "yellow", "idle": "dim", "done": "dim"}
    for w in workers:
        detail = w.get("info") or ""
        queue = w.get("queue_length")
        if w["name"] == REF_SYNC_WORKER:
            # Its "queue length" is the size of the reference table, not work waiting.
            rows = "-" if queue is None else plural(queue, "reference entry", "reference entries")
            detail = f"{rows}; {detail or 'no pass completed yet'}"
            queue = None
        if w.get("last_error"):
            when = relative_time(w.get("last_error_at"), now)
            detail = f"{detail}\nlast error ({when}): {w['last_error']}".strip()
        state = w["state"]
        table.add_row(
            escape(w["name"]),
            f"[{styles.get(state, '')}]{state}[/]" if state in styles else escape(state),
            "-" if queue is None else str(queue),
            "-" if w.get("tranquility") is None else str(w["tranquility"]),
            "-" if w.get("progress") is None else f"{w['progress']:.1%}",
            f"{w['errors']}"
            + (f" ({w['consecutive_errors']} in a row)" if w.get("consecutive_errors") else ""),
            escape(detail),
        )
    return table


async def _workers(client: AdminClient, out: Output) -> int:
    reply = await client.call("workers")
    if out.json:
        out.emit_json(reply["workers"])
    else:
        out.print(workers_table(reply["workers"], reply["now"]))
    return Exit.OK


def run_workers(args: argparse.Namespace) -> int:
    return run_session(args, _workers)


# ---------------------------------------------------------------------------------------
# errors


def configure_errors(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument(
        "--limit", type=int, default=None, help="show at most this many (default: all)"
    )


async def fetch_errors(
    client: AdminClient, limit: int | None
) -> tuple[list[dict[str, Any]], int, int]:
    """Every resync error (or the first ``limit``), following pages; with total and now."""
    errors: list[dict[str, Any]] = []
    after: str | None = None
    total = 0
    now = 0
    while True:
        args: dict[str, Any] = {}
        if after is not None:
            args["after"] = after
        if limit is not None:
            args["limit"] = max(1, min(200, limit - len(errors)))
        page = await client.call("errors", **args)
        errors.extend(page["errors"])
        total, now, after = page["total"], page["now"], page["next"]
        if after is None or (limit is not None and len(errors) >= limit):
            return errors, total, now


async def _errors(client: AdminClient, out: Output, limit: int | None) -> int:
    errors, total, now = await fetch_errors(client, limit)
    if out.json:
        out.emit_json({"errors": errors, "total": total, "now": now})
        return Exit.OK
    if not errors:
        out.say("no blocks in error")
        return Exit.OK
    table = Table(title=f"{total} block(s) in error", title_justify="left")
    table.add_column("hash", no_wrap=True)
    table.add_column("refs", justify="right")
    table.add_column("failures", justify="right")
    table.add_column("last try", no_wrap=True)
    table.add_column("next try", no_wrap=True)
    for e in errors:
        table.add_row(
            e["hash"],
            str(e["refcount"]),
            str(e["error_count"]),
            relative_time(e["last_try"], now),
            relative_time(e["next_try"], now),
        )
    out.print(table)
    if len(errors) < total:
        out.note(f"showing {len(errors)} of {total}; use --limit or --json to see more")
    out.note(
        "retry one now with `trioblock retry-now HASH` (or --all); drop an unrecoverable "
        "block with `trioblock purge HASH --yes`"
    )
    return Exit.OK


def run_errors(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        Output().error("--limit must be at least 1")
        return Exit.USAGE

    async def session(client: AdminClient, out: Output) -> int:
        return await _errors(client, out, args.limit)

    return run_session(args, session)


__all__ = [
    "configure_errors",
    "configure_status",
    "configure_workers",
    "fetch_errors",
    "plural",
    "render_status",
    "run_errors",
    "run_status",
    "run_workers",
    "scrub_summary",
    "stored_summary",
    "workers_table",
]
