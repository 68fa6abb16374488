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
closes; then the process exits 0.

Before anything is opened, the config is checked whole (exit 2 and one line naming the
key for a bad value, a metadata or data directory that is a file, a TLS file that
cannot be loaded); then the RPC and metrics ports are bound, so a port in use fails
before the database is touched (exit 1, one line). Exit 1 too if the node fails later
(a data directory that cannot be opened…). No traceback for any of these.

With a ``[tls]`` table the node serves TLS only, and connects to its peers over TLS.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
from pathlib import Path

import trio

from .._core.config import Config
from .._net.tcp import TcpTransport
from .._node import open_block_manager
from ..errors import ConfigError, TrioblockError
from .admin_service import admin_handler
from .client import describe_error, root_causes
from .metrics_http import bind_metrics, serve_metrics
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


def check_directories(config: Config) -> None:
    """``ConfigError`` now for a metadata or data directory that can never be one.

    A path that exists must be a directory; one that does not must have a directory as
    its nearest existing ancestor (the node creates the rest). Nothing is created here.
    """
    entries: list[tuple[str, Path]] = [("data_dir", d.path) for d in config.data_dirs]
    if config.metadata_dir is not None:
        entries.insert(0, ("metadata_dir", config.metadata_dir))
    for key, path in entries:
        probe = path
        while True:
            try:
                mode = os.stat(probe).st_mode
            except (FileNotFoundError, NotADirectoryError):
                if probe.parent == probe:
                    break
                probe = probe.parent
                continue
            except OSError as exc:
                raise ConfigError(key, f"{probe}: {exc.strerror or exc}") from None
            if not stat.S_ISDIR(mode):
                where = "is" if probe == path else f"is inside {probe}, which is"
                raise ConfigError(key, f"{path} {where} not a directory")
            break


def _transport(node: NodeFile) -> TcpTransport | None:
    if node.layout is None and node.listen is None:
        return None
    client_ssl = server_ssl = None
    if node.tls is not None:
        client_ssl = node.tls.client_context()
        server_ssl = node.tls.server_context() if node.listen is not None else None
    return TcpTransport(
        listen=node.listen, peers=node.peers, ssl_context=client_ssl, server_ssl_context=server_ssl
    )


async def run_node(
    node: NodeFile,
    metrics_addr: Address | None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the node (and its metrics server), report readiness, run until cancelled.

    Both ports are bound before the node opens, so that a port in use fails at once.
    """
    transport = _transport(node)
    metrics_listeners: list[trio.SocketListener] = []
    try:
        if transport is not None and node.listen is not None:
            await transport.bind()
        if metrics_addr is not None:
            metrics_listeners = await bind_metrics(metrics_addr)
        async with (
            open_block_manager(
                node.config,
                layout=node.layout,
                transport=transport,
                admin_handler=admin_handler(node.addresses()),
            ) as bm,
            trio.open_nursery() as nursery,
        ):
            ready = f"trioblock node {node.config.node_id} ready"
            if transport is not None and transport.listen_address is not None:
                ready += f" on {_where(transport.listen_address)}"
            if metrics_addr is not None:
                bound = await nursery.start(serve_metrics, bm, metrics_addr, metrics_listeners)
                ready += f" (metrics http://{_where(bound)}/metrics)"
            print(ready, flush=True)
            task_status.started()
            await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            for listener in metrics_listeners:
                await trio.aclose_forcefully(listener)
            if transport is not None:
                await transport.aclose()


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


def prepare(args: argparse.Namespace) -> tuple[NodeFile, Address | None]:
    """Load and check everything ``serve`` needs; ``ConfigError`` for the first problem."""
    node = load_node_file(args.config)
    metrics = parse_address(args.metrics, "--metrics") if args.metrics else node.metrics_addr
    check_directories(node.config)
    if node.tls is not None:
        node.tls.check(serving=node.listen is not None)
    return node, metrics


def run(args: argparse.Namespace) -> int:
    try:
        node, metrics = prepare(args)
    except ConfigError as exc:
        print(f"trioblock: {exc}", file=sys.stderr, flush=True)
        return Exit.USAGE
    try:
        trio.run(serve_node, node, metrics)
    except BaseException as exc:
        causes = root_causes(exc)
        for cause in causes:
            if isinstance(cause, ConfigError):
                print(f"trioblock: {cause}", file=sys.stderr, flush=True)
                return Exit.USAGE
        if causes and all(isinstance(c, TrioblockError | OSError) for c in causes):
            for extra in causes[1:]:
                log.error("also: %s", describe_error(extra))
            print(
                f"trioblock: node {node.config.node_id} failed: {describe_error(causes[0])}",
                file=sys.stderr,
                flush=True,
            )
            return Exit.FAILED
        raise
    return Exit.OK
