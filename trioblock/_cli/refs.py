"""``trioblock ref``: cluster references through a running node.

- ``ref add HASH OWNER`` / ``ref remove HASH OWNER``: ``add_reference`` /
  ``remove_reference`` on the block's storage nodes, through the node the command talks
  to (any node of the cluster); they return once a write quorum committed the change.
  ``OWNER`` is text (its UTF-8 bytes), or hex bytes with ``--hex``; 1..128 bytes.
  An add of a block none of the acknowledging storage nodes holds is still recorded,
  with a warning on stderr (``"block_missing": true`` under ``--json``): put the block.
- ``ref list HASH``: the node's own view of the block's references, tombstones included
  (a node that does not store the block holds none).
- ``ref sync``: run a reference anti-entropy pass on the node now and print its report.

Exit codes: 0 done; 1 when the node could not do it (no write quorum, a sync with a peer
failed, ``ref add`` of a pair removed earlier: a removed reference never comes back, or
``ref list`` of a block the node holds no reference to); 2 for a malformed hash or
owner; 3 when the node cannot be reached.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from .._core.hashing import Hash
from .client import AdminClient, add_target_arguments, run_session
from .output import CliError, Exit, Output, key_value_table, relative_time, timestamp

#: Owners are 1..128 bytes.
MAX_OWNER_BYTES = 128


def _hash(text: str) -> Hash:
    try:
        return Hash.from_hex(text.strip())
    except ValueError:
        raise CliError(Exit.USAGE, f"not a block hash (64 hex digits): {text!r}") from None


def _owner(text: str, as_hex: bool) -> bytes:
    if as_hex:
        try:
            owner = bytes.fromhex(text)
        except ValueError:
            raise CliError(Exit.USAGE, f"--hex: not hex digits: {text!r}") from None
    else:
        owner = text.encode()
    if not 1 <= len(owner) <= MAX_OWNER_BYTES:
        raise CliError(
            Exit.USAGE, f"an owner is 1..{MAX_OWNER_BYTES} bytes; {text!r} is {len(owner)}"
        )
    return owner


def _shown_owner(entry: dict[str, Any]) -> str:
    text = entry.get("owner")
    if text is not None and text.isprintable():
        return str(text)
    return f"0x{entry['owner_hex']}"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ref_cmd", metavar="ACTION")
    sub.required = True
    for name, text in (
        ("add", "reference HASH on behalf of OWNER on every storage node of the block"),
        ("remove", "remove OWNER's reference to HASH (for good: a removed reference stays so)"),
    ):
        action = sub.add_parser(name, help=text, description=text)
        action.add_argument("hash", help="the block (64 hex digits)")
        action.add_argument("owner", help="who holds the reference: text, or hex with --hex")
        action.add_argument("--hex", action="store_true", help="OWNER is given in hex")
        add_target_arguments(action)
    listing = sub.add_parser(
        "list",
        help="the node's view of a block's references, tombstones included",
        description="the node's view of a block's references, tombstones included",
    )
    listing.add_argument("hash", help="the block (64 hex digits)")
    add_target_arguments(listing)
    sync = sub.add_parser(
        "sync",
        help="run a reference anti-entropy pass on the node now and show what it did",
        description="run a reference anti-entropy pass on the node now and show what it did",
    )
    add_target_arguments(sync)


async def _update(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    h = _hash(args.hash)
    owner = _owner(args.owner, args.hex)
    removing = args.ref_cmd == "remove"
    reply = await client.call("ref_remove" if removing else "ref_add", hash=h.hex(), owner=owner)
    local = reply.get("local")
    stays_removed = not removing and local is not None and local["deleted"]
    if out.json:
        out.emit_json(reply)
    elif not stays_removed:
        verb = "removed" if removing else "added"
        out.say(f"reference of {_shown_owner(reply)} to {h.hex()} {verb}")
        if local is not None:
            out.note(f"node {client.node_id}: refcount {reply['refcount']}")
    if reply.get("block_missing"):
        out.note(
            f"warning: no storage node that recorded the reference holds block {h.hex()} "
            "(never put, or collected before the reference came): put it again"
        )
    if stays_removed:
        out.error(
            f"{_shown_owner(reply)}'s reference to {h.hex()} was removed earlier and stays "
            "removed (a removed reference never comes back: use a new owner)"
        )
        return Exit.FAILED
    return Exit.OK


async def _list(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    h = _hash(args.hash)
    entries: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        request: dict[str, Any] = {"hash": h.hex()}
        if after is not None:
            request["after"] = after
        page = await client.call("ref_list", **request)
        entries.extend(page["references"])
        after = page["next"]
        if after is None:
            break
    now = page["now"]
    if out.json:
        out.emit_json(
            {
                "hash": h.hex(),
                "references": entries,
                "alive": page["alive"],
                "refcount": page["refcount"],
                "now": now,
            }
        )
    elif entries:
        out.say(
            f"{h.hex()} on node {client.node_id}: {page['alive']} alive, "
            f"refcount {page['refcount']}"
        )
        table = Table()
        table.add_column("owner", overflow="fold")
        table.add_column("state", no_wrap=True)
        table.add_column("updated", no_wrap=True)
        for e in entries:
            table.add_row(
                escape(_shown_owner(e)),
                "removed" if e["deleted"] else "alive",
                f"{timestamp(e['updated_msec'])} ({relative_time(e['updated_msec'], now)})",
            )
        out.print(table)
    if not entries:
        if not out.json:
            out.error(f"node {client.node_id} holds no reference to {h.hex()}")
        return Exit.FAILED
    return Exit.OK


def render_sync_report(out: Output, report: dict[str, Any], node_id: str) -> None:
    rows: list[tuple[str, Any]] = [
        ("node", node_id),
        ("entries pulled", report["pulled"]),
        ("entries pushed", report["pushed"]),
        ("tombstones collected", report["collected"]),
        ("missing blocks queued", report["missing"]),
        ("entries handed off", report.get("handed_off", 0)),
    ]
    for peer, why in sorted(report["failed"].items()):
        rows.append((f"failed: {peer}", why))
    out.print(key_value_table("reference sync", rows))


async def _sync(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    reply = await client.call("ref_sync")
    report = reply["report"]
    if out.json:
        out.emit_json(report)
    else:
        render_sync_report(out, report, client.node_id)
    if report["failed"]:
        if not out.json:
            out.error(
                f"could not sync with {len(report['failed'])} peer(s): "
                + "; ".join(f"{p}: {why}" for p, why in sorted(report["failed"].items()))
            )
        return Exit.FAILED
    return Exit.OK


def run(args: argparse.Namespace) -> int:
    try:
        # Bad input is a usage error before anything is sent.
        if args.ref_cmd != "sync":
            _hash(args.hash)
        if args.ref_cmd in ("add", "remove"):
            _owner(args.owner, args.hex)
    except CliError as exc:
        Output().error(exc.message)
        return exc.code
    action = {"add": _update, "remove": _update, "list": _list, "sync": _sync}[args.ref_cmd]

    async def session(client: AdminClient, out: Output) -> int:
        return await action(client, out, args)

    return run_session(args, session)


__all__ = ["configure", "render_sync_report", "run"]
