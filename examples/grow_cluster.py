"""A running cluster grows from three nodes to four, then retires one: membership change
with ``trioblock serve`` processes on 127.0.0.1 and the ``trioblock layout`` commands.

Run it with ``python examples/grow_cluster.py`` (from anywhere, once trioblock is
installed). It narrates:

1. three nodes (``[peers]`` n0, n1, n2 in zone dc1, replication factor 3) started as
   ``python -m trioblock serve`` processes; an application's gateway puts blocks and
   references each under an owner;
2. a fourth node, n3, started with ``join = true`` and only n0 in its ``[peers]``: it
   learns the layout from n0 and stores nothing yet;
3. ``trioblock layout assign n3 -z dc1 -c 1T --address …`` and ``trioblock layout
   apply`` on n0: version 2; ``trioblock layout status --json`` polled (as a script
   would) until every node is synced and nothing is left to move;
4. ``trioblock layout remove n1`` and ``apply``: version 3; polled until n1 is drained,
   then n1 is switched off;
5. every block read back through the gateway, byte-identical, and every node stopped.

The node processes are started and stopped as in ``examples/tcp_cluster.py`` (whose
helpers this example imports); they are always stopped, whatever happens. The example
exits non-zero on any failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from tcp_cluster import NodeProcess, always_stopped, free_ports, interrupted, start_all

import trioblock

log = logging.getLogger("example")

FIRST = ("n0", "n1", "n2")
ALL = (*FIRST, "n3")
#: Seconds allowed for one layout change to settle, and for the whole run.
SETTLE_TIMEOUT = 45.0
RUN_TIMEOUT = 90.0
#: Small delays for a quick demo: a missing block is fetched after 2 × rpc_timeout.
SETTINGS = "rpc_timeout = 2.0\ngc_delay = 5.0\ndata_fsync = false\n"


def write_configs(root: Path, ports: dict[str, int]) -> dict[str, Path]:
    """n0..n2 list each other in ``[peers]``; n3 says ``join = true`` and knows n0 only."""
    (root / "secret").write_text(os.urandom(32).hex() + "\n")
    (root / "secret").chmod(0o600)
    members = "".join(f'{n} = {{ addr = "127.0.0.1:{ports[n]}", zone = "dc1" }}\n' for n in FIRST)
    configs = {}
    for node in ALL:
        head = (
            f'node_id = "{node}"\nmetadata_dir = "{node}/meta"\ndata_dir = "{node}/data"\n'
            f'rpc_bind_addr = "127.0.0.1:{ports[node]}"\nrpc_secret_file = "secret"\n' + SETTINGS
        )
        if node == "n3":
            body = f'join = true\n\n[peers]\nn0 = "127.0.0.1:{ports["n0"]}"\n'
        else:
            body = "replication_factor = 3\n\n[peers]\n" + members
        configs[node] = root / f"{node}.toml"
        configs[node].write_text(head + body)
    return configs


async def trioblock_cli(*args: str, config: Path) -> str:
    """Run ``python -m trioblock ARGS --config CONFIG`` as an operator would; its stdout
    (``RuntimeError`` with its stderr if it fails)."""
    done = await trio.run_process(
        [sys.executable, "-m", "trioblock", *args, "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"trioblock {' '.join(args)} exited {done.returncode}: {done.stderr.decode()}"
        )
    return str(done.stdout.decode())


async def follow(config: Path, version: int, leaving: str | None = None) -> dict[str, Any]:
    """Poll ``layout status --json`` until ``version`` is settled with nothing left to
    move, narrating what changes; the last status."""
    said: set[str] = set()
    with trio.fail_after(SETTLE_TIMEOUT):
        while True:
            status = json.loads(await trioblock_cli("layout", "status", "--json", config=config))
            for entry in status["nodes"]:
                node = entry["node"]
                if entry["role"] is None and entry["drained"]:
                    event = f"{node} is drained: it may be switched off"
                elif entry["role"] is not None and entry["synced_version"] >= version:
                    event = f"{node} is synced to version {version}"
                else:
                    continue
                if event not in said:
                    said.add(event)
                    log.info("  %s", event)
            left = status["blocks_left"]
            line = f"version {status['version']}, live {status['live_versions']}: {left} left"
            if line not in said:
                said.add(line)
                log.info("  %s", line)
            settled = status["version"] == version and status["settled"] and left == 0
            if settled and (
                leaving is None
                or any(e["node"] == leaving and e["drained"] for e in status["nodes"])
            ):
                return dict(status)
            await trio.sleep(0.3)


async def main(root: Path, nodes: dict[str, NodeProcess], ports: dict[str, int]) -> None:
    with trio.fail_after(RUN_TIMEOUT):
        await narrate(root, nodes, ports)


async def narrate(root: Path, nodes: dict[str, NodeProcess], ports: dict[str, int]) -> None:
    secret = bytes.fromhex((root / "secret").read_text().strip())
    n0 = nodes["n0"].config
    async with trio.open_nursery() as nursery:
        for line in await start_all(nursery, {n: nodes[n] for n in FIRST}):
            log.info("%s", line)
        log.info("3 nodes up in zone dc1: replication factor 3")

        # The application's gateway knows the three members; it follows layout changes
        # (it learns each new version, and the new nodes' addresses, from the nodes).
        transport = trioblock.TcpTransport(peers={n: ("127.0.0.1", ports[n]) for n in FIRST})
        async with trioblock.open_gateway(
            "example-app",
            layout=trioblock.StaticLayout({n: "dc1" for n in FIRST}, replication_factor=3),
            transport=transport,
            rpc_secret=secret,
            rpc_timeout=2.0,
        ) as gw:
            blocks = {}
            for i in range(12):
                data = f"block {i} ".encode() * 500 + os.urandom(64)
                h = await gw.put_block(data)
                await gw.add_reference(h, f"example/{i}")
                blocks[h] = data
            log.info("put and referenced %d blocks through a gateway", len(blocks))

            log.info("%s", await nodes["n3"].start(nursery))
            log.info("n3 started with join = true, knowing only n0: it holds no role yet")
            address = f"127.0.0.1:{ports['n3']}"
            staged = await trioblock_cli(
                "layout", "assign", "n3", "-z", "dc1", "-c", "1T", "-a", address, config=n0
            )
            log.info("trioblock layout assign n3 -z dc1 -c 1T -a %s:\n%s", address, staged.rstrip())
            applied = await trioblock_cli("layout", "apply", config=n0)
            log.info("trioblock layout apply: %s", applied.strip().splitlines()[-1])
            await follow(n0, 2)
            held = sum([await held_by(root, "n3", h) for h in blocks])
            log.info(
                "grown to 4 nodes: settled at version 2; n3 holds %d/%d blocks", held, len(blocks)
            )

            await trioblock_cli("layout", "remove", "n1", config=n0)
            applied = await trioblock_cli("layout", "apply", config=n0)
            log.info("trioblock layout remove n1 + apply: %s", applied.strip().splitlines()[-1])
            await follow(n0, 3, leaving="n1")
            held = sum([await held_by(root, "n1", h) for h in blocks])
            code, _said = await nodes["n1"].stop()
            log.info("n1 retired: it held %d blocks when switched off (exit code %d)", held, code)
            if held or code:
                raise RuntimeError(f"n1 was not drained cleanly: {held} blocks, exit {code}")

            # The gateway follows layout changes by itself within seconds (gossip, or a
            # node refusing a stale request); here it asks at once.
            await gw.sync_layout()
            ok = sum([await gw.get_block(h) == data for h, data in blocks.items()])
            if ok != len(blocks):
                raise RuntimeError(f"only {ok}/{len(blocks)} blocks read back")
            log.info(
                "read %d/%d blocks back through the gateway, byte-identical (layout version %d)",
                ok,
                len(blocks),
                gw.layout_status().version,
            )

        codes: dict[str, int] = {}

        async def stop(node: str) -> None:
            codes[node], _said = await nodes[node].stop()

        async with trio.open_nursery() as stopping:  # SIGTERM to all, then wait
            for node in ("n0", "n2", "n3"):
                stopping.start_soon(stop, node)
        codes = {node: codes[node] for node in ("n0", "n2", "n3")}
        summary = ", ".join(f"{node}={code}" for node, code in codes.items())
        if any(codes.values()):
            raise RuntimeError(f"a node did not stop cleanly: exit codes {summary}")
        log.info("cluster stopped cleanly: exit codes %s", summary)


async def held_by(root: Path, node: str, h: trioblock.Hash) -> bool:
    """Whether ``node``'s data directory holds a copy (looking at the files, for the demo)."""
    name = h.hex()
    folder = root / node / "data" / name[:2] / name[2:4]
    return (folder / name).exists() or (folder / f"{name}.zst").exists()


def run() -> int:
    with tempfile.TemporaryDirectory(prefix="trioblock-grow-") as tmp:
        root = Path(tmp)
        ports = dict(zip(ALL, free_ports(len(ALL)), strict=True))
        configs = write_configs(root, ports)
        nodes = {node: NodeProcess(node, configs[node]) for node in ALL}
        with always_stopped(nodes):
            try:
                trio.run(main, root, nodes, ports)
            except BaseException as exc:
                if interrupted(exc):
                    print("interrupted: the nodes were stopped", file=sys.stderr)
                    return 130
                for node in nodes.values():
                    print(f"--- {node.node} log (tail) ---\n{node.log_tail()}", file=sys.stderr)
                raise
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(relativeCreated)6.0fms %(name)-8s %(message)s",
    )
    logging.getLogger("trioblock").setLevel(logging.WARNING)
    sys.exit(run())
