"""``trioblock serve --config node.toml``: run a node until SIGINT or SIGTERM.

The node listens on the config's ``rpc_bind_addr`` (peers and the CLI's admin requests,
both authenticated with the cluster secret) and, with ``--metrics HOST:PORT`` or the
config's ``metrics_addr``, serves Prometheus metrics over HTTP.

Lines on stdout, for people and for supervisors waiting on them::

    trioblock node n0 ready on 127.0.0.1:3901 (metrics http://127.0.0.1:9090/metrics)
    trioblock node n0 stopped

The signal handlers are installed before the node opens, so a signal during start-up
stops it cleanly too. On a signal, the node leaves ``open_block_manager``: workers
finish their current unit (a durable write completes), the server stops, the database
closes; then the process exits 0. Exit 2 for a bad config, 1 if the node fails (a port
already in use, a data directory that cannot be opened…).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from .._net.tcp import TcpTransport
from .._node.lifecycle import open_block_manager
from ..errors import ConfigError, TrioblockError
from .admin_service import answer_admin
from .client import leaf_error
from .metrics_http import serve_metrics
from .nodefile import Address, NodeFile, load_node_file, parse_address
from .output import Exit

log = logging.getLogger("trioblock.serve")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True, help="node.toml")
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (overrides metrics_addr)",
    )


def _where(address: Address | None) -> str:
    if address is None:
        return ""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_node(
    node: NodeFile,
    metrics_addr: Address | None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the node (and its metrics server), report readiness, run until cancelled."""
    transport = None
    if node.layout is not None or node.listen is not None:
        transport = TcpTransport(listen=node.listen, peers=node.peers)
    async with (
        open_block_manager(
            node.config, layout=node.layout, transport=transport, admin_handler=answer_admin
        ) as bm,
        trio.open_nursery() as nursery,
    ):
        ready = f"trioblock node {node.config.node_id} ready"
        if transport is not None and transport.listen_address is not None:
            ready += f" on {_where(transport.listen_address)}"
        if metrics_addr is not None:
            bound = await nursery.start(serve_metrics, bm, metrics_addr)
            ready += f" (metrics http://{_where(bound)}/metrics)"
        print(ready, flush=True)
        task_status.started()
        await trio.sleep_forever()


async def serve_node(node: NodeFile, metrics_addr: Address | None) -> None:
    """Run the node until SIGINT or SIGTERM, then shut it down cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await nursery.start(run_node, node, metrics_addr)
    print(f"trioblock node {node.config.node_id} stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        node = load_node_file(args.config)
        metrics = parse_address(args.metrics, "--metrics") if args.metrics else node.metrics_addr
    except ConfigError as exc:
        print(f"trioblock: {exc}", file=sys.stderr, flush=True)
        return Exit.USAGE
    try:
        trio.run(serve_node, node, metrics)
    except BaseException as exc:
        leaf = leaf_error(exc)
        if isinstance(leaf, ConfigError):
            print(f"trioblock: {leaf}", file=sys.stderr, flush=True)
            return Exit.USAGE
        if isinstance(leaf, TrioblockError | OSError):
            print(
                f"trioblock: node {node.config.node_id} failed: {leaf}",
                file=sys.stderr,
                flush=True,
            )
            return Exit.FAILED
        raise
    return Exit.OK
