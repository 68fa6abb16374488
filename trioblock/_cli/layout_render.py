"""How ``trioblock layout`` and ``trioblock status`` show the layout: roles, staged
changes, per-node status and history, as tables or summary lines."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from .output import Output, human_bytes, relative_time, timestamp

# ---------------------------------------------------------------------------------------
# Rendering


def role_text(role: dict[str, Any] | None) -> str:
    if role is None:
        return "no role"
    zone = role["zone"] or "(no zone)"
    text = f"zone {zone}, capacity {human_bytes(role['capacity'])}"
    if role.get("address"):
        text += f", address {role['address']}"
    return text


def change_line(change: dict[str, Any]) -> str:
    node, role, previous = change["node"], change["role"], change["previous"]
    if role is None:
        return f"- {node}: removed (was {role_text(previous)})"
    if previous is None:
        return f"+ {node}: {role_text(role)}"
    diffs = []
    for key, label in (("zone", "zone"), ("capacity", "capacity"), ("address", "address")):
        if role[key] != previous[key]:
            show = human_bytes if key == "capacity" else (lambda v: v or "-")
            diffs.append(f"{label} {show(previous[key])} -> {show(role[key])}")
    return f"~ {node}: " + ", ".join(diffs)


def render_stage(out: Output, staged: list[dict[str, Any]], preview: dict[str, Any] | None) -> None:
    if not staged:
        out.say("no staged changes")
        return
    out.say(f"staged changes ({len(staged)}):")
    for change in staged:
        out.say(f"  {change_line(change)}")
    if preview is None:
        return
    if "error" in preview:
        out.say(f"apply would be refused: {preview['error']}")
        return
    share = preview["copies_moving"] / preview["copies"] if preview["copies"] else 0.0
    out.say(
        f"apply would make version {preview['version']}: {preview['nodes']} node(s) in "
        f"{preview['zones']} zone(s), replication {preview['replication_factor']}, write "
        f"quorum {preview['write_quorum']}; {preview['copies_moving']} of "
        f"{preview['copies']} partition copies move ({share:.0%})"
    )
    for node, parts in sorted(preview["partitions"].items()):
        out.say(f"  {node}: {parts['before']} -> {parts['after']} partitions")


def render_show(out: Output, reply: dict[str, Any]) -> None:
    if reply["version"] == 0:
        out.say(f"node {reply['node_id']} has not learned the cluster's layout yet")
        return
    live = ", ".join(str(v) for v in reply["live_versions"])
    head = (
        f"layout version {reply['version']} (live: {live}): {reply['total_roles']} storage "
        f"node(s), replication {reply['replication_factor']}, write quorum "
        f"{reply['write_quorum']}"
    )
    if reply["fixed"]:
        head += "; fixed (this node's layout cannot change)"
    out.say(head)
    table = Table()
    for column in ("node", "zone", "capacity", "address", "partitions"):
        table.add_column(
            column, justify="right" if column in ("capacity", "partitions") else "left"
        )
    for role in reply["roles"]:
        table.add_row(
            escape(role["node"]),
            escape(role["zone"] or "-") if role["zone"] is not None else "-",
            human_bytes(role["capacity"]) if role["capacity"] is not None else "-",
            escape(role["address"] or "-"),
            "-" if role["partitions"] is None else str(role["partitions"]),
        )
    out.print(table)
    render_stage(out, reply.get("staged", []), reply.get("preview"))


def node_state(entry: dict[str, Any], version: int) -> str:
    if entry["role"] is not None:
        return "synced" if entry["synced_version"] >= version else "syncing"
    return "drained" if entry["drained"] else "draining"


def status_summary(status: dict[str, Any]) -> str:
    if status.get("fixed"):
        return "none: this node's layout is fixed (it cannot change)"
    live = ", ".join(str(v) for v in status["live_versions"])
    head = f"version {status['version']} (live: {live})"
    left = f"{status['blocks_left']} block(s) ({human_bytes(status['bytes_to_move'])}) left"
    if status["settled"]:
        if status["blocks_left"]:
            return f"{head}: settled; {left}: surplus copies to hand off and delete"
        return f"{head}: settled"
    nodes = status.get("nodes")
    if nodes is None:  # (the `trioblock status` summary has no node list)
        return f"{head}: moving, {left}"
    version = status["version"]
    syncing = sum(e["role"] is not None and e["synced_version"] < version for e in nodes)
    draining = sum(e["role"] is None and not e["drained"] for e in nodes)
    return (
        f"{head}: moving, {syncing} node(s) to sync, {draining} to drain; {left} "
        "at their last reports"
    )


def render_status(out: Output, status: dict[str, Any]) -> None:
    out.say(f"layout {status_summary(status)}")
    table = Table()
    table.add_column("node", no_wrap=True)
    table.add_column("zone", no_wrap=True)
    table.add_column("capacity", justify="right")
    table.add_column("synced to", justify="right")
    table.add_column("state", no_wrap=True)
    table.add_column("to fetch", justify="right")
    table.add_column("to hand off", justify="right")
    table.add_column("bytes to move", justify="right")
    version = status["version"]
    for entry in status["nodes"]:
        role = entry["role"]
        table.add_row(
            escape(entry["node"]),
            "-" if role is None else escape(role["zone"] or "-"),
            "-" if role is None else human_bytes(role["capacity"]),
            str(entry["synced_version"] or "-"),
            escape(node_state(entry, version)),
            str(entry["blocks_to_fetch"]),
            str(entry["blocks_to_hand_off"]),
            human_bytes(entry["bytes_to_move"]),
        )
    out.print(table)
    for entry in status["nodes"]:
        if entry["role"] is None and entry["drained"]:
            out.say(f"{entry['node']} is drained: it may be switched off")


def render_history(out: Output, reply: dict[str, Any]) -> None:
    now = reply["now"]
    table = Table(title=f"{reply['total']} layout version(s)", title_justify="left")
    for column in ("version", "state", "applied", "retired", "nodes", "repl./quorum"):
        table.add_column(column, no_wrap=column != "nodes", overflow="fold")
    for r in reply["records"]:
        state = "superseded" if r["superseded"] else ("live" if r["live"] else "retired")
        nodes = ", ".join(r["nodes"])
        if r["node_count"] > len(r["nodes"]):
            nodes += f" … ({r['node_count']})"
        table.add_row(
            str(r["version"]),
            state,
            f"{timestamp(r['applied_msec'])} ({relative_time(r['applied_msec'], now)})"
            if r["applied_msec"]
            else "at start-up",
            relative_time(r["retired_msec"], now),
            escape(nodes),
            f"{r['replication_factor']}/{r['write_quorum']}",
        )
    out.print(table)


def layout_rows(layout: dict[str, Any]) -> list[tuple[str, Any]]:
    """The ``trioblock status`` line about the layout version and its movement."""
    if "version" not in layout:
        return []
    # (its ``nodes`` are the layout's node ids, not per-node states)
    return [("layout change", status_summary({k: v for k, v in layout.items() if k != "nodes"}))]


__all__ = [
    "change_line",
    "layout_rows",
    "node_state",
    "render_history",
    "render_show",
    "render_stage",
    "render_status",
    "role_text",
    "status_summary",
]
