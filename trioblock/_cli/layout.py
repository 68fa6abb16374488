"""``trioblock layout``: change the cluster's membership through a running node.

As Garage's ``garage layout``: changes are *staged* on the node the command talks to
(kept in its database, so separate invocations accumulate them), shown, then applied
as one new layout version, which every node learns and moves blocks for::

    trioblock layout assign n3 -z dc1 -c 2T --address 10.0.0.13:3901
    trioblock layout remove n1
    trioblock layout show              # the current version, the staged changes, the effect
    trioblock layout apply             # -> version N+1; then:
    trioblock layout status --watch    # until every node is synced, and n1 drained

- ``show``: the current version (roles: zone, capacity, address, share of partitions),
  the live versions, the staged changes and what applying them would make.
- ``assign NODE --zone Z --capacity C [--address HOST:PORT]`` (``-z`` / ``-c``):
  stage a role; for a node that has one, what is not given is kept. ``remove NODE``:
  stage a removal. Both print the stage and its effect.
- ``revert``: drop the staged changes. ``forget NODE``: a removed node that died for
  good counts as drained. ``apply [--replication-factor N]
  [--write-quorum N]``: apply them; prints the new version number.
- ``status [--watch]``: per node, its role, the version it is synced to, whether it is
  drained and what it has left to move; ``--watch`` polls with progress bars until the
  layout is settled (every node with a role synced to the current version, every other
  node drained) and no node has a surplus copy left to hand off, saying when a node is
  synced and when a removed node may be switched off.
- ``history``: the versions this node has seen, applied and retired times.

Capacities take binary units: ``K`` = 2**10, ``M`` = 2**20, ``G`` = 2**30, ``T`` =
2**40, ``P`` = 2**50 bytes (``2T``, ``500G``, ``1.5T``, ``2TiB``); ``KB`` … ``PB``
are powers of 1000; a plain number is bytes. A capacity only weighs a node's share of
the blocks against the others'.

Exit codes: 0 done (``status`` whatever the state, once the node answered); 1 when
the node refused (an invalid change, nothing staged, a gateway asked to stage); 2 for
bad usage (a malformed capacity or node id); 3 when the node cannot be reached.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, Final

import trio

from .._core.layoutversion import NODE_ID_PATTERN
from .client import AdminClient, add_target_arguments, run_session
from .layout_render import (
    change_line,
    layout_rows,
    render_history,
    render_show,
    render_stage,
    render_status,
    role_text,
    status_summary,
)
from .operations import POLL_INTERVAL
from .output import Exit, Output, duration_arg, human_bytes

_CAPACITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGTP])(i?B)?|(B))?", re.IGNORECASE)
_POWERS: Final = "KMGTP"
CAPACITY_HELP: Final = (
    "capacity: 2T, 500G, 100M, 1.5T or plain bytes; K, M, G, T, P (and KiB … PiB) are "
    "powers of 1024 (T = 2**40 bytes), KB … PB powers of 1000"
)


def parse_capacity(text: str) -> int:
    """Bytes from ``2T`` (2 × 2**40), ``500G``, ``2TiB``, ``2TB`` (2 × 10**12), ``123``;
    ``ValueError`` for anything else or a result below one byte."""
    m = _CAPACITY.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad capacity {text!r}: use e.g. 2T, 500G, 100M or bytes")
    number, unit, suffix, _bytes = m.groups()
    size = float(number)
    if unit:
        decimal = suffix is not None and suffix.lower() == "b"
        size *= (1000 if decimal else 1024) ** (_POWERS.index(unit.upper()) + 1)
    if size < 1 or size >= 2**62:
        raise ValueError(f"bad capacity {text!r}: between 1 byte and 4 EiB")
    return int(size)


def capacity_arg(text: str) -> int:
    try:
        return parse_capacity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_arg(text: str) -> str:
    if not NODE_ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"bad node id {text!r}: 1-64 of [A-Za-z0-9._-]")
    return text


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def address_arg(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


# ---------------------------------------------------------------------------------------
# Parsers


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="layout_cmd", metavar="ACTION")
    sub.required = True

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text)

    show = action("show", "the current layout, the staged changes and what they would do")
    add_target_arguments(show)

    assign = action(
        "assign", "stage a role for NODE: zone, capacity, address (as garage layout assign)"
    )
    assign.add_argument("layout_node", metavar="NODE", type=node_arg, help="the node's id")
    assign.add_argument("--zone", "-z", help="the node's zone (a rack, a site); required if new")
    assign.add_argument(
        "--capacity", "-c", type=capacity_arg, help=CAPACITY_HELP + "; required if new"
    )
    assign.add_argument(
        "--address",
        "-a",
        type=address_arg,
        metavar="HOST:PORT",
        help="where the other nodes reach it (default: kept, else from this node's [peers])",
    )
    add_target_arguments(assign, short_config=False)

    remove = action("remove", "stage the removal of NODE (its blocks move to the others)")
    remove.add_argument("layout_node", metavar="NODE", type=node_arg, help="the node's id")
    add_target_arguments(remove)

    revert = action("revert", "drop the staged changes")
    add_target_arguments(revert)

    forget = action(
        "forget", "declare a removed node that died gone for good (it counts as drained)"
    )
    forget.add_argument("node", metavar="NODE", help="the node's id")
    add_target_arguments(forget)

    apply = action("apply", "apply the staged changes as the next layout version")
    apply.add_argument(
        "--replication-factor", type=count_arg, metavar="N", help="copies of each block"
    )
    apply.add_argument(
        "--write-quorum", type=count_arg, metavar="N", help="acknowledged writes of a put"
    )
    add_target_arguments(apply)

    status = action("status", "each node's progress towards the current layout version")
    status.add_argument(
        "--watch",
        action="store_true",
        help="poll, with progress bars, until settled and nothing is left to move",
    )
    status.add_argument(
        "--interval",
        type=duration_arg,
        default=POLL_INTERVAL,
        help=f"seconds between polls with --watch (default {POLL_INTERVAL})",
    )
    add_target_arguments(status)

    history = action("history", "the layout versions the node has seen")
    add_target_arguments(history)


# ---------------------------------------------------------------------------------------
# Fetching


async def fetch_pages(
    client: AdminClient, op: str, key: str, cursor: str = "after"
) -> dict[str, Any]:
    """Every page of ``op``: the first reply with the ``key`` lists of all pages."""
    reply = await client.call(op)
    items = list(reply[key])
    following = reply.get("next")
    while following is not None:
        page = await client.call(op, **{cursor: following})
        items.extend(page[key])
        following = page.get("next")
    reply[key] = items
    reply.pop("next", None)
    return reply


# ---------------------------------------------------------------------------------------
# Sessions


async def _show(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    reply = await fetch_pages(client, "layout_show", "roles")
    if out.json:
        out.emit_json(reply)
    else:
        render_show(out, reply)
    return Exit.OK


async def _stage(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    # (``args.node`` is ``--node HOST:PORT``, the node the command talks to)
    request: dict[str, Any] = {"action": args.layout_cmd, "node": args.layout_node}
    if args.layout_cmd == "assign":
        for key in ("zone", "capacity", "address"):
            value = getattr(args, key)
            if value is not None:
                request[key] = value
    reply = await client.call("layout_stage", **request)
    if out.json:
        out.emit_json(reply)
        return Exit.OK
    for warning in reply["warnings"]:
        out.note(f"note: {warning}")
    render_stage(out, reply["staged"], reply["preview"])
    if reply["staged"]:
        out.note("`trioblock layout apply` applies them, `trioblock layout revert` drops them")
    return Exit.OK


async def _revert(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    reply = await client.call("layout_revert")
    if out.json:
        out.emit_json(reply)
    else:
        out.say(f"dropped {reply['dropped']} staged change(s); layout version {reply['version']}")
    return Exit.OK


async def _forget(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    reply = await client.call("layout_forget", node=args.node)
    if out.json:
        out.emit_json(reply)
    else:
        out.say(
            f"{reply['forgotten']} forgotten: counted as drained "
            f"(layout version {reply['version']})"
        )
    return Exit.OK


async def _apply(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {}
    if args.replication_factor is not None:
        request["replication_factor"] = args.replication_factor
    if args.write_quorum is not None:
        request["write_quorum"] = args.write_quorum
    reply = await client.call("layout_apply", **request)
    if out.json:
        out.emit_json(reply)
        return Exit.OK
    for change in reply["changes"]:
        out.say(f"  {change_line(change)}")
    out.say(f"applied layout version {reply['version']} (was {reply['previous_version']})")
    if reply["addresses_recorded"]:
        out.note(
            "recorded the addresses of "
            + ", ".join(reply["addresses_recorded"])
            + f" (from node {client.node_id}'s config) in the layout"
        )
    out.note("blocks now move to their new nodes: follow with `trioblock layout status --watch`")
    return Exit.OK


async def fetch_status(client: AdminClient) -> dict[str, Any]:
    return await fetch_pages(client, "layout_status", "nodes")


def finished(status: dict[str, Any]) -> bool:
    """Settled, and no node has anything left to move (surplus copies handed off too)."""
    return bool(status["settled"]) and status["blocks_left"] == 0 == status["bytes_to_move"]


async def watch_status(
    client: AdminClient, out: Output, interval: float, *, say: Callable[[str], None]
) -> dict[str, Any]:
    """Poll ``layout_status`` until :func:`finished`, with progress bars of the blocks and bytes
    left; ``say`` each node that becomes synced or drained. The last status."""
    reported: dict[str, str] = {}
    most_blocks = most_bytes = 0
    with out.progress("detail") as progress:
        blocks = progress.add_task("blocks", total=1, detail="")
        moved = progress.add_task("bytes", total=1, detail="")
        while True:
            status = await fetch_status(client)
            version = status["version"]
            for entry in status["nodes"]:
                node = entry["node"]
                event = None
                if entry["role"] is None and entry["drained"]:
                    event = f"{node} is drained: it may be switched off"
                elif entry["role"] is not None and entry["synced_version"] >= version > 0:
                    event = f"{node} is synced to layout version {version}"
                if event is not None and reported.get(node) != event:
                    reported[node] = event
                    say(event)  # above the bars: they share the stderr console
            most_blocks = max(most_blocks, status["blocks_left"])
            most_bytes = max(most_bytes, status["bytes_to_move"])
            progress.update(
                blocks,
                total=max(most_blocks, 1),
                completed=most_blocks - status["blocks_left"],
                detail=f"{status['blocks_left']} left",
            )
            progress.update(
                moved,
                total=max(most_bytes, 1),
                completed=most_bytes - status["bytes_to_move"],
                detail=f"{human_bytes(status['bytes_to_move'])} left",
            )
            if finished(status):
                progress.update(blocks, total=1, completed=1)
                progress.update(moved, total=1, completed=1)
                return status
            await trio.sleep(interval)


async def _status(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    if args.watch:
        status = await watch_status(client, out, args.interval, say=out.note)
    else:
        status = await fetch_status(client)
    if out.json:
        out.emit_json(status)
    else:
        render_status(out, status)
    return Exit.OK


async def _history(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    reply = await fetch_pages(client, "layout_history", "records", cursor="start")
    if out.json:
        out.emit_json(reply)
    else:
        render_history(out, reply)
    return Exit.OK


_ACTIONS = {
    "show": _show,
    "assign": _stage,
    "remove": _stage,
    "revert": _revert,
    "forget": _forget,
    "apply": _apply,
    "status": _status,
    "history": _history,
}


def run(args: argparse.Namespace) -> int:
    action = _ACTIONS[args.layout_cmd]

    async def session(client: AdminClient, out: Output) -> int:
        return await action(client, out, args)

    return run_session(args, session)


__all__ = [
    "CAPACITY_HELP",
    "change_line",
    "configure",
    "fetch_pages",
    "fetch_status",
    "layout_rows",
    "parse_capacity",
    "render_show",
    "render_status",
    "role_text",
    "run",
    "status_summary",
    "watch_status",
]
