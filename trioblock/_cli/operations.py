"""Long operator work on a running node, with live progress: scrub, repair, rebalance.

The node runs the work in its own nursery; these commands start it and then poll the
node's ``operation`` admin op every ``--interval`` seconds, drawing a ``rich`` progress
bar on stderr until the work is over. ``--detach`` returns right after starting; Ctrl-C
stops watching (exit 130) but not the work, which carries on in the node.

Exit codes: 0 when the work completed (a scrub that found corruptions completed too:
they are quarantined and queued for resync, see ``trioblock errors``); 1 when it failed
or was cancelled before completing; a paused scrub ends the watch with 0.

``scrub status`` shows the scrub state without changing it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import trio
from rich.table import Table

from .client import AdminClient, add_target_arguments, run_session
from .output import (
    CliError,
    Exit,
    Output,
    duration_arg,
    key_value_table,
    parse_duration,
    relative_time,
    timestamp,
)

#: Default seconds between two polls of the node while watching.
POLL_INTERVAL = 0.5


def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", action="store_true", help="start it and return; do not watch")
    parser.add_argument(
        "--interval",
        type=duration_arg,
        default=POLL_INTERVAL,
        help=f"seconds between progress polls (default {POLL_INTERVAL})",
    )


async def watch(
    client: AdminClient, out: Output, view: dict[str, Any], interval: float
) -> dict[str, Any]:
    """Poll the operation in ``view`` until it is no longer running; return its last view.

    Draws a progress bar on stderr when it is a terminal (and ``--json`` is off).
    """
    name = view["name"]
    with out.progress("info") as progress:
        task = progress.add_task(name, total=1.0, info="")
        while True:
            progress.update(
                task, completed=view.get("progress") or 0.0, info=view.get("info") or ""
            )
            if view["state"] != "running":
                break
            await trio.sleep(interval)
            view = (await client.call("operation", name=name))["operation"]
        if view["state"] == "done":
            progress.update(task, completed=1.0)
    return view


# ---------------------------------------------------------------------------------------
# scrub


def configure_scrub(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="scrub_cmd", metavar="ACTION")
    start = sub.add_parser("start", help="start a scrub now and watch it")
    _watch_arguments(start)
    add_target_arguments(start)
    pause = sub.add_parser("pause", help="pause the running scrub for DURATION (e.g. 2h)")
    pause.add_argument("duration", help="how long: 90s, 15m, 2h, 1d, 1h30m or seconds")
    add_target_arguments(pause)
    resume = sub.add_parser("resume", help="resume a paused scrub and watch it")
    _watch_arguments(resume)
    add_target_arguments(resume)
    cancel = sub.add_parser("cancel", help="abandon the running scrub")
    add_target_arguments(cancel)
    tranquility = sub.add_parser(
        "tranquility", help="sleep N × the mean step time between blocks (persisted)"
    )
    tranquility.add_argument("n", type=int, help="0 (full speed) .. 1000")
    add_target_arguments(tranquility)
    status = sub.add_parser("status", help="show the scrub's state")
    add_target_arguments(status)
    sub.required = True


def render_scrub(out: Output, scrub: dict[str, Any], now: int) -> None:
    rows: list[tuple[str, Any]] = [
        ("state", scrub["state"]),
        ("progress", f"{scrub['progress']:.1%}"),
        ("blocks verified", scrub["blocks_checked"]),
        ("corruptions found", scrub["corruptions_found"]),
        ("tranquility", scrub["tranquility"]),
        (
            "last completed",
            f"{timestamp(scrub['last_completed'])} ({relative_time(scrub['last_completed'], now)})"
            if scrub["last_completed"]
            else "never",
        ),
        ("next automatic run", relative_time(scrub["next_run"], now)),
    ]
    if scrub.get("paused_until") is not None:
        rows.append(("paused until", relative_time(scrub["paused_until"], now)))
    out.print(key_value_table("scrub", rows))


async def _scrub(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    cmd = args.scrub_cmd
    request: dict[str, Any] = {}
    if cmd == "tranquility":
        request["tranquility"] = args.n
    elif cmd == "pause":
        try:
            request = {"cmd": "pause", "seconds": parse_duration(args.duration)}
        except ValueError as exc:
            raise CliError(Exit.USAGE, str(exc)) from None
    else:
        request["cmd"] = cmd
    before = None
    if cmd in ("start", "resume"):
        before = (await client.call("scrub", cmd="status"))["scrub"]["last_completed"]
    reply = await client.call("scrub", **request)
    scrub, now = reply["scrub"], reply["now"]
    if cmd == "resume" and scrub["state"] != "running":
        raise CliError(Exit.FAILED, f"no paused scrub to resume (the scrub is {scrub['state']})")
    if cmd not in ("start", "resume") or args.detach:
        if out.json:
            out.emit_json(scrub)
        else:
            render_scrub(out, scrub, now)
        return Exit.OK
    view = (await client.call("operation", name="scrub"))["operation"]
    view = await watch(client, out, view, args.interval)
    scrub, now = view["report"], view["now"]
    if out.json:
        out.emit_json(scrub)
    else:
        render_scrub(out, scrub, now)
    if view["state"] == "paused":
        out.note("the scrub is paused; `trioblock scrub resume` continues it")
        return Exit.OK
    if scrub["last_completed"] is None or scrub["last_completed"] == before:
        out.error("the scrub stopped before completing (cancelled?)")
        return Exit.FAILED
    if scrub["corruptions_found"]:
        out.note("corrupt copies were quarantined and queued for resync: see `trioblock errors`")
    return Exit.OK


def run_scrub(args: argparse.Namespace) -> int:
    async def session(client: AdminClient, out: Output) -> int:
        return await _scrub(client, out, args)

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# repair and rebalance


def configure_operation(parser: argparse.ArgumentParser) -> None:
    _watch_arguments(parser)
    add_target_arguments(parser)


def _report_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (key.replace("_", " "), timestamp(value) if key.endswith("_at") else value)
        for key, value in report.items()
        if not isinstance(value, list)  # a recount's changes: a table of their own
    ]


def configure_repair(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        nargs="?",
        choices=("blocks", "refcounts"),
        default="blocks",
        help="blocks (default): queue every block for resync; refcounts: recompute every "
        "reference count from the block's references and fix the drifted ones",
    )
    configure_operation(parser)


def _operation_runner(name: str) -> Callable[[argparse.Namespace], int]:
    async def session(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
        if name == "refcounts":
            await client.call("repair_refcounts")
            view = (await client.call("operation", name=name))["operation"]
        else:
            view = (await client.call(name))["operation"]
        if not args.detach:
            view = await watch(client, out, view, args.interval)
        if out.json:
            out.emit_json(view)
        elif view["state"] == "running":
            out.say(f"{name} started on node {client.node_id}")
        elif view["state"] == "done":
            out.print(key_value_table(f"{name} done", _report_rows(view["report"] or {})))
        if view["state"] == "failed":
            out.error(f"{name} failed: {view['error']}")
            return Exit.FAILED
        if name == "repair" and view["state"] == "done" and not out.json:
            out.note("every block is queued for resync; `trioblock workers` shows the queue")
        if name == "refcounts" and view["state"] == "done" and not out.json:
            render_recount(out, view["report"] or {})
        return Exit.OK

    def run(args: argparse.Namespace) -> int:
        async def bound(client: AdminClient, out: Output) -> int:
            return await session(client, out, args)

        return run_session(args, bound)

    return run


def render_recount(out: Output, report: dict[str, Any]) -> None:
    """The counts a reference recount changed (the first ones), after its totals."""
    changes = report.get("changes") or []
    if not changes:
        out.note("every count matched its references")
        return
    table = Table(title="counts fixed (first ones)", title_justify="left")
    for column in ("block", "count before", "count after"):
        table.add_column(column, overflow="fold")
    for change in changes:
        after = str(change["new_count"])
        if change["deletable_at"] is not None:
            after += " (deletable)"
        table.add_row(change["hash"], str(change["old_count"]), after)
    out.print(table)


_run_blocks = _operation_runner("repair")
_run_refcounts = _operation_runner("refcounts")


def run_repair(args: argparse.Namespace) -> int:
    """``repair`` (every block queued for resync) or ``repair refcounts``."""
    if getattr(args, "what", "blocks") == "refcounts":
        return _run_refcounts(args)
    return _run_blocks(args)


run_rebalance = _operation_runner("rebalance")


__all__ = [
    "configure_operation",
    "configure_repair",
    "configure_scrub",
    "render_scrub",
    "run_rebalance",
    "run_repair",
    "run_scrub",
    "watch",
]
