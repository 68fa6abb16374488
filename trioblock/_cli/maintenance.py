"""Operators' inspection and maintenance: ``block info``, ``stats`` and ``meta``.

- ``block info HASH [--cluster]``: what the node holds about a block (count and state,
  references, local copies, storage nodes, resync queue entries and error); with
  ``--cluster``, every storage node's view side by side. Exit 1 when no node asked
  knows anything of the block (no count, reference, copy, queue entry or error).
- ``stats``: per node its blocks, bytes, references, queue and error counts and the
  free space of its data and metadata directories, and the cluster's usable capacity
  given the replication factor, through any node. Nodes that could not be asked are
  named on stderr (the figures leave them out); the exit code is 0 all the same.
- ``meta snapshot``: a consistent snapshot of the node's metadata database now (the
  node keeps running); ``meta list``: the snapshots it keeps.
- ``meta restore --config node.toml [--snapshot FILE]``: with the node **stopped**, put
  its newest snapshot (or FILE) in place of its database; the replaced files are moved
  aside, never deleted. Exit 1 when the node is running or there is no snapshot.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from .._core.hashing import Hash
from .._node import restore_metadata
from ..errors import ConfigError, DatabaseError
from .client import AdminClient, add_target_arguments, run_session
from .nodefile import load_node_file
from .output import (
    CliError,
    Exit,
    Output,
    human_bytes,
    key_value_table,
    relative_time,
    timestamp,
)


def _block_hash(text: str) -> Hash:
    try:
        return Hash.from_hex(text.strip())
    except ValueError:
        raise CliError(Exit.USAGE, f"not a block hash (64 hex digits): {text!r}") from None


def _owner(entry: dict[str, Any]) -> str:
    text = entry.get("owner")
    return str(text) if text is not None and text.isprintable() else f"0x{entry['owner_hex']}"


# ---------------------------------------------------------------------------------------
# block info


def configure_block(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="block_cmd", metavar="ACTION")
    sub.required = True
    text = "what the node (or with --cluster, every storage node) holds about a block"
    info = sub.add_parser("info", help=text, description=text)
    info.add_argument("hash", help="the block (64 hex digits)")
    info.add_argument("--cluster", action="store_true", help="ask every storage node of the block")
    add_target_arguments(info)


def _known(view: dict[str, Any]) -> bool:
    return bool(
        view["state"] != "absent"
        or view["references_alive"]
        or view["references_removed"]
        or view["copies"]
        or view["queued"]
        or view["errors"]
    )


def _count_text(view: dict[str, Any]) -> str:
    if view["state"] == "present":
        return f"{view['refcount']} (present)"
    if view["state"] == "deletable":
        return f"0 (deletable {relative_time(view['deletable_at'], view['now'])})"
    return "0 (absent: no row)"


def _queue_text(view: dict[str, Any]) -> str:
    times = view["queued"]
    if not times:
        return "not queued"
    first = relative_time(times[0], view["now"])
    return f"due {first}" + (f" (+{len(times) - 1} more entries)" if len(times) > 1 else "")


def _error_text(view: dict[str, Any]) -> str:
    if not view["errors"]:
        return "none"
    now = view["now"]
    return (
        f"{view['errors']} failure(s), last {relative_time(view['last_try'], now)}, "
        f"next try {relative_time(view['next_try'], now)}"
    )


def _copies_text(view: dict[str, Any]) -> str:
    copies = view["copies"]
    if not copies:
        return "none"
    return ", ".join(f"{c['encoding']} {human_bytes(c['size'])}" for c in copies)


def _render_one(out: Output, h: str, view: dict[str, Any]) -> None:
    refs = f"{view['references_alive']} alive, {view['references_removed']} removed"
    rows: list[tuple[str, Any]] = [
        ("block", h),
        ("node", view["node_id"]),
        ("refcount", _count_text(view)),
        ("references", refs),
        ("storage nodes", ", ".join(view["storage_nodes"])),
        ("stored here", "yes" if view["is_storage_node"] else "no (not a storage node)"),
        ("resync queue", _queue_text(view)),
        ("resync error", _error_text(view)),
    ]
    out.print(key_value_table("block info", rows))
    if view["copies"]:
        table = Table(title="local copies", title_justify="left")
        for column in ("directory", "path", "encoding", "size"):
            table.add_column(column, overflow="fold")
        for c in view["copies"]:
            table.add_row(
                escape(c["directory"]), escape(c["path"]), c["encoding"], human_bytes(c["size"])
            )
        out.print(table)
    if view["references"]:
        shown = len(view["references"])
        total = view["references_alive"] + view["references_removed"]
        title = "references" + (f" (first {shown} of {total})" if shown < total else "")
        table = Table(title=title, title_justify="left")
        table.add_column("owner", overflow="fold")
        table.add_column("state", no_wrap=True)
        table.add_column("updated", no_wrap=True)
        for r in view["references"]:
            table.add_row(
                escape(_owner(r)),
                "removed" if r["deleted"] else "alive",
                f"{timestamp(r['updated_msec'])} ({relative_time(r['updated_msec'], view['now'])})",
            )
        out.print(table)


def _render_side_by_side(out: Output, h: str, nodes: dict[str, dict[str, Any]]) -> None:
    out.say(f"block {h}: {len(nodes)} storage node(s)")
    table = Table(title="block info, every storage node", title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    for node in nodes:
        table.add_column(escape(node), overflow="fold")
    views = list(nodes.values())

    def row(label: str, render: Any) -> None:
        table.add_row(
            label,
            *(escape(v["error"]) if "error" in v else escape(str(render(v))) for v in views),
        )

    row("refcount", _count_text)
    row("alive references", lambda v: v["references_alive"])
    row("removed references", lambda v: v["references_removed"])
    row("local copies", _copies_text)
    row("resync queue", _queue_text)
    row("resync error", _error_text)
    out.print(table)
    owners: dict[str, dict[str, str]] = {}
    for node, view in nodes.items():
        for r in view.get("references", []):
            owners.setdefault(_owner(r), {})[node] = "removed" if r["deleted"] else "alive"
    if owners:
        refs = Table(title="references (first ones of each node)", title_justify="left")
        refs.add_column("owner", overflow="fold")
        for node in nodes:
            refs.add_column(escape(node), no_wrap=True)
        for owner, states in sorted(owners.items()):
            refs.add_row(escape(owner), *(states.get(node, "-") for node in nodes))
        out.print(refs)


async def _block_info(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    h = _block_hash(args.hash).hex()
    reply = await client.call("block_info", hash=h, cluster=bool(args.cluster))
    nodes: dict[str, dict[str, Any]] = reply["nodes"]
    if out.json:
        out.emit_json(reply)
    elif args.cluster:
        _render_side_by_side(out, h, nodes)
    else:
        _render_one(out, h, next(iter(nodes.values())))
    for node, view in nodes.items():
        if "error" in view:
            out.note(f"node {node} could not be asked: {view['error']}")
    if not any("error" not in v and _known(v) for v in nodes.values()):
        if not out.json:
            where = "no storage node" if args.cluster else f"node {client.node_id}"
            out.error(f"{where} holds anything about block {h}")
        return Exit.FAILED
    return Exit.OK


def run_block(args: argparse.Namespace) -> int:
    try:
        _block_hash(args.hash)
    except CliError as exc:
        Output(json_mode=args.json).error(exc.message)
        return exc.code

    async def session(client: AdminClient, out: Output) -> int:
        return await _block_info(client, out, args)

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# stats


def configure_stats(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)


def _free(space: dict[str, Any]) -> str:
    if space.get("error"):
        return f"? ({space['error']})"
    return f"{human_bytes(space['free'])} of {human_bytes(space['total'])}"


def render_stats(out: Output, stats: dict[str, Any]) -> None:
    table = Table(title="storage nodes", title_justify="left")
    for column in (
        "node",
        "blocks",
        "bytes",
        "references",
        "resync queue",
        "resync errors",
        "data free",
        "metadata free",
    ):
        table.add_column(column, overflow="fold")
    for node, s in sorted(stats["nodes"].items()):
        writable = [d for d in s["data_dirs"] if not d["read_only"]]
        data = (
            _free(writable[0])
            if len(writable) == 1
            else f"{human_bytes(s['data_free'])} in {len(writable)} dirs"
        )
        table.add_row(
            escape(node),
            f"{s['blocks']}{'' if s['exact'] else ' (counting)'}",
            human_bytes(s["bytes"]),
            str(s["references"]),
            str(s["resync_queue"]),
            str(s["resync_errors"]),
            data,
            _free(s["metadata_dir"]),
        )
    out.print(table)
    rows: list[tuple[str, Any]] = [
        ("replication factor", stats["replication_factor"]),
        ("usable data capacity", f"{human_bytes(stats['usable_data'])} (new distinct data)"),
        ("usable metadata capacity", human_bytes(stats["usable_metadata"])),
    ]
    if not stats["complete"]:
        rows.append(("estimate", "partial: some nodes of the layout did not answer"))
    out.print(key_value_table("cluster", rows))


async def _stats(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    stats = await client.call("stats")
    if out.json:
        out.emit_json(stats)
    else:
        render_stats(out, stats)
    for node, why in sorted(stats["unreachable"].items()):
        out.note(f"node {node} could not be asked: {why}")
    return Exit.OK


def run_stats(args: argparse.Namespace) -> int:
    async def session(client: AdminClient, out: Output) -> int:
        return await _stats(client, out, args)

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# meta


def configure_meta(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="meta_cmd", metavar="ACTION")
    sub.required = True
    text = "take a consistent snapshot of the node's metadata database now (node running)"
    snapshot = sub.add_parser("snapshot", help=text, description=text)
    add_target_arguments(snapshot)
    text = "list the node's metadata snapshots"
    listing = sub.add_parser("list", help=text, description=text)
    add_target_arguments(listing)
    text = (
        "with the node stopped, put its newest metadata snapshot (or --snapshot FILE) in "
        "place of its database; the replaced files are moved aside"
    )
    restore = sub.add_parser("restore", help=text, description=text)
    restore.add_argument("--config", "-c", type=Path, required=True, help="the node's node.toml")
    restore.add_argument("--snapshot", type=Path, help="the snapshot file (default: the newest)")
    restore.add_argument("--json", action="store_true", help="print JSON for machines")


def _snapshot_rows(snapshots: list[dict[str, Any]]) -> Table:
    table = Table(title="metadata snapshots (oldest first)", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("taken", no_wrap=True)
    table.add_column("size", no_wrap=True)
    for s in snapshots:
        table.add_row(escape(s["path"]), timestamp(s["taken_msec"]), human_bytes(s["size"]))
    return table


async def _meta(client: AdminClient, out: Output, args: argparse.Namespace) -> int:
    if args.meta_cmd == "snapshot":
        reply = await client.call("meta_snapshot")
        if out.json:
            out.emit_json(reply)
        else:
            snap = reply["snapshot"]
            out.say(f"snapshot {snap['path']} ({human_bytes(snap['size'])})")
            out.note(f"node {client.node_id} keeps {len(reply['kept'])} snapshot(s)")
        return Exit.OK
    reply = await client.call("meta_snapshots")
    if out.json:
        out.emit_json(reply)
    elif reply["snapshots"]:
        out.print(_snapshot_rows(reply["snapshots"]))
    else:
        out.note(f"node {client.node_id} has no metadata snapshot")
    return Exit.OK


def _restore(args: argparse.Namespace) -> int:
    out = Output(json_mode=args.json)
    try:
        node = load_node_file(args.config)
        result = restore_metadata(node.config.metadata_path, args.snapshot)
    except ConfigError as exc:
        out.error(str(exc))
        return Exit.USAGE
    except DatabaseError as exc:
        out.error(str(exc))
        return Exit.FAILED
    view = {
        "snapshot": str(result.snapshot),
        "database": str(result.database),
        "moved_aside": [str(p) for p in result.moved_aside],
    }
    if out.json:
        out.emit_json(view)
        return Exit.OK
    out.say(f"restored {result.database} from {result.snapshot}")
    for moved in result.moved_aside:
        out.note(f"moved aside: {moved}")
    out.note(
        "start the node: it catches up from its peers (references by anti-entropy, "
        "blocks by resync); `trioblock ref sync` runs an anti-entropy pass at once"
    )
    return Exit.OK


def run_meta(args: argparse.Namespace) -> int:
    if args.meta_cmd == "restore":
        return _restore(args)

    async def session(client: AdminClient, out: Output) -> int:
        return await _meta(client, out, args)

    return run_session(args, session)


__all__ = [
    "configure_block",
    "configure_meta",
    "configure_stats",
    "render_stats",
    "run_block",
    "run_meta",
    "run_stats",
]
