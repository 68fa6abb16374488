"""``open_block_manager``: open a node, run its services, close it cleanly.

Opening: validate the configuration, open the metadata database (in a worker thread),
load the data directories' partition assignment, check their markers, create the RPC
client, build the node's shared :class:`~trioblock._node.context.NodeContext` and its
:class:`~trioblock._node.manager.BlockManager`, then start the node's nursery
(``service_nursery``): stale temp files swept in the background, RPC server, resync workers, scrub
worker. Closing: workers stop between units (within ``SHUTDOWN_GRACE``), the RPC layer
closes, the nursery is cancelled, the database closes; every later call raises
``NodeClosedError``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._core.block import max_encoded_size
from .._core.config import Config
from .._core.datalayout import DataLayout
from .._core.placement import JoinCluster, Layout, LocalLayout, StaticLayout
from .._net.rpc import MAX_GET_BLOCKS_BYTES, RpcNode
from .._net.transport import Transport
from .._storage import BlockStore, MetadataDb, run_blocking
from ..errors import ConfigError
from .background.peerback import retry_when_peers_return
from .background.refsync import RefSyncWorker
from .background.resync import ResyncPool
from .background.resync_exec import ResyncExecutor
from .background.workers import WorkerRegistry
from .clock import NodeClock
from .context import NodeContext, PeerContext, ResyncShared
from .diskusage import watch_data_dirs
from .endpoint import RpcEndpoint
from .localcounts import RefCounts
from .manager import AdminHandler, BlockManager, StorageParts
from .membership import HISTORY_KEY, Membership, initial_history
from .metasnap import MetadataSnapshots
from .nurseries import service_nursery
from .operations import Operations
from .reads import Reader
from .refupdates import References
from .writes import Writer

log = logging.getLogger("trioblock.node")

#: How long leaving the context waits for workers to finish their current unit.
SHUTDOWN_GRACE = 10.0


@asynccontextmanager
async def open_block_manager(
    config: Config,
    *,
    layout: Layout | None = None,
    transport: Transport | None = None,
    admin_handler: AdminHandler | None = None,
) -> AsyncIterator[BlockManager]:
    """Open a node: database, data directories, RPC server and background workers.

    ``layout=None`` means a single node that stores every block itself;
    ``transport=None`` means no network. ``admin_handler``, when given, answers the
    operator requests (``Admin`` messages) arriving over the transport:
    ``await admin_handler(bm, request, body)`` returns a reply map, or a reply map and
    a body (``trioblock serve`` installs the CLI's); without one they are refused.

    Leaving the context stops the workers between units (a durable write in progress
    completes), stops the server and closes the database; the ``BlockManager`` then
    raises ``NodeClosedError``. Bad configuration raises ``ConfigError`` naming the
    field. An exception raised by the code inside the context comes out as itself.

    A ``Config`` whose ``metadata_dir`` and ``data_dir`` are both ``None`` opens a
    *gateway*: a node outside the layout's storage nodes that stores nothing and puts,
    gets, streams and references through the cluster (see :func:`open_gateway`).
    """
    config.validate()
    if config.is_gateway:
        async with _open_gateway(config, layout, transport) as gateway:
            yield gateway
        return
    if layout is None:
        layout = LocalLayout(config.node_id)
    if transport is not None and config.rpc_secret is None:
        raise ConfigError("rpc_secret", "a network transport requires a cluster secret")
    if isinstance(layout, JoinCluster) and transport is None:
        raise ConfigError("layout", "a node joining a cluster needs a transport")
    if len(layout.nodes) > 1 and transport is None:
        log.warning("%s: layout has peers but no transport: peers are unreachable", config.node_id)

    clock = NodeClock()
    db = await run_blocking(
        functools.partial(MetadataDb, config.metadata_path, fsync=config.metadata_fsync)
    )
    ctx: NodeContext | None = None
    try:
        history = initial_history(layout, db.get_setting(HISTORY_KEY), config.node_id)
        fixed_or_first = history is None or (
            history.version == 1 and isinstance(layout, StaticLayout)
        )
        if fixed_or_first and config.node_id not in layout.nodes:
            raise ConfigError(
                "node_id", f"{config.node_id!r} is not a node of the layout {layout!r}"
            )
        data_layout = await run_blocking(_load_data_layout, db, config)
        store = BlockStore(
            data_layout,
            compression=config.compression_level is not None,
            fsync=config.data_fsync,
            limiter=trio.CapacityLimiter(config.disk_threads),
            max_block_size=config.max_block_size,
            disk=config.disk,
        )
        store.health.label = config.node_id
        markers = db.get_setting("data_dir_markers", {})
        new_markers = await run_blocking(store.prepare_dirs_sync, markers, config.node_id)
        if new_markers != markers:
            db.set_setting("data_dir_markers", new_markers)
        rpc = None if transport is None else _rpc_node(config, transport)
        resync = ResyncShared(
            db.get_setting("resync_workers", config.resync_workers),
            db.get_setting("resync_tranquility", config.resync_tranquility),
        )
        ctx = NodeContext(
            config=config, layout=layout, db=db, store=store, clock=clock, rpc=rpc, resync=resync
        )
        membership = Membership(ctx, history, db=db, seeds=_seeds(layout, transport))
        workers = WorkerRegistry(ctx.stopping, clock.now_msec)
        writer = Writer(ctx, on_stale=membership.exchange)
        reader = Reader(ctx, writer)
        resync_pool = ResyncPool(ctx, workers, ResyncExecutor(ctx, reader, writer))
        operations = Operations(ctx, workers)
        counts = RefCounts(ctx)
        references = References(ctx, counts, on_stale=membership.exchange)
        ref_sync = RefSyncWorker(
            ctx, references, counts=counts, membership=membership, fetch=reader.fetch_and_store
        )
        storage = StorageParts(
            ctx=ctx,
            workers=workers,
            refs=counts,
            resync=resync_pool,
            operations=operations,
            ref_sync=ref_sync,
            snapshots=MetadataSnapshots(ctx),
        )
        bm = BlockManager(
            ctx,
            writer=writer,
            reader=reader,
            references=references,
            storage=storage,
            membership=membership,
        )
        admin = None if admin_handler is None else functools.partial(admin_handler, bm)
        endpoint = RpcEndpoint(ctx, reader, writer, references, admin, membership)
        async with service_nursery(f"node {config.node_id}") as nursery:
            ctx.nursery = nursery
            # Stale temp files of an earlier crash are swept in the background: the
            # node is ready at once, however many blocks it stores.
            ctx.spawn_background("temp-file sweep", _sweep, store, config.node_id)
            nursery.start_soon(db.run_checkpoints)
            nursery.start_soon(storage.snapshots.run_auto)
            nursery.start_soon(watch_data_dirs, store)
            if rpc is not None:
                await nursery.start(rpc.serve, endpoint)
                nursery.start_soon(membership.run_gossip)
                nursery.start_soon(retry_when_peers_return, ctx, rpc.reachability)
            resync_pool.ensure_running()
            operations.start_scrub_worker(nursery)
            workers.add(nursery, ref_sync)
            log.info(
                "node %s open: %d data dir(s), compression %s, %d resync worker(s)",
                config.node_id,
                len(data_layout.dirs),
                config.compression_level,
                resync.n_workers,
            )
            try:
                yield bm
            finally:
                # Workers finish their current unit, then the RPC layer closes.
                with trio.move_on_after(SHUTDOWN_GRACE) as grace:
                    grace.shield = True
                    await workers.stop()
                if rpc is not None:
                    with trio.CancelScope(shield=True):
                        await rpc.aclose()
                nursery.cancel_scope.cancel()
    finally:
        if ctx is not None:
            ctx.stopping.set()
            ctx.closed = True
        with trio.CancelScope(shield=True):
            await run_blocking(db.close)
        log.info("node %s closed", config.node_id)


@asynccontextmanager
async def open_gateway(
    node_id: str,
    *,
    layout: Layout,
    transport: Transport,
    rpc_secret: bytes,
    **config: Any,
) -> AsyncIterator[BlockManager]:
    """Open a gateway: a node that stores nothing and uses the cluster's storage nodes.

    ``node_id`` must not be one of ``layout``'s nodes. The gateway has no data
    directory and no database: ``put_block``, ``get_block``, ``stream_block``,
    ``add_reference`` and ``remove_reference`` go to the storage nodes of each block
    (with the layout's write quorum for writes); storage-only members (local reference
    counts, the resync queue, scrub…) raise ``GatewayError``. ``config`` holds further
    :class:`~trioblock.Config` fields (``rpc_timeout``, ``compression_level``…).

    Example::

        async with trioblock.open_gateway(
            "app-1", layout=layout, transport=transport, rpc_secret=secret
        ) as gw:
            h = await gw.put_block(data)
            await gw.add_reference(h, "backup-2026-11-26")
    """
    cfg = Config(node_id=node_id, metadata_dir=None, data_dir=None, rpc_secret=rpc_secret, **config)
    async with open_block_manager(cfg, layout=layout, transport=transport) as gateway:
        yield gateway


@asynccontextmanager
async def _open_gateway(
    config: Config, layout: Layout | None, transport: Transport | None
) -> AsyncIterator[BlockManager]:
    if layout is None or transport is None:
        raise ConfigError(
            "data_dir", "a node without directories is a gateway: it needs a layout and a transport"
        )
    if config.node_id in layout.nodes:
        raise ConfigError(
            "data_dir",
            f"{config.node_id!r} is a storage node of the layout: it needs a metadata_dir and "
            "a data_dir",
        )
    rpc = _rpc_node(config, transport)
    ctx = PeerContext(config=config, layout=layout, clock=NodeClock(), rpc=rpc)
    membership = Membership(
        ctx, initial_history(layout, None, config.node_id), seeds=_seeds(layout, transport)
    )
    writer = Writer(ctx, on_stale=membership.exchange)
    gateway = BlockManager(
        ctx,
        writer=writer,
        reader=Reader(ctx, writer),
        references=References(ctx, None, on_stale=membership.exchange),
        storage=None,
        membership=membership,
    )
    try:
        async with service_nursery(f"gateway {config.node_id}") as nursery:
            ctx.nursery = nursery
            nursery.start_soon(membership.run_gossip)
            log.info("gateway %s open: %d storage nodes", config.node_id, len(layout.nodes))
            try:
                yield gateway
            finally:
                # Leaving the nursery waits for the sends still going on beyond their
                # quorum, for at most the grace period.
                ctx.stopping.set()
                nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
    finally:
        ctx.stopping.set()
        ctx.closed = True
        with trio.CancelScope(shield=True):
            await rpc.aclose()
        log.info("gateway %s closed", config.node_id)


def _seeds(layout: Layout, transport: Transport | None) -> tuple[str, ...]:
    """Whom a node asks for the cluster's layout besides the layout's own nodes: the
    seeds of a ``JoinCluster``, else (for one) every peer a ``TcpTransport`` knows."""
    if isinstance(layout, JoinCluster):
        if layout.seeds:
            return layout.seeds
        peers = getattr(transport, "peers", None)
        if callable(peers):
            peers = peers()
        if isinstance(peers, Mapping):
            return tuple(sorted(peers))
    return ()


def _rpc_node(config: Config, transport: Transport) -> RpcNode:
    """The node's RPC client and server over ``transport``."""
    if config.rpc_secret is None:
        raise ConfigError("rpc_secret", "a network transport requires a cluster secret")
    return RpcNode(
        config.node_id,
        transport,
        config.rpc_secret,
        timeout=config.rpc_timeout,
        # The largest body a node sends: one block as stored (a GetBlock answer, a
        # PutBlock), or a batch of them (a PutBlocks of at most 4 MiB; a GetBlocksReply
        # of under 4 MiB of blocks plus one more), with room to spare.
        max_body_size=max_encoded_size(config.max_block_size) + MAX_GET_BLOCKS_BYTES + (1 << 20),
    )


async def _sweep(store: BlockStore, node_id: str) -> None:
    removed = await store.sweep_temps()
    if removed:
        log.info("%s: removed %d stale temp files left by an earlier crash", node_id, removed)


def _load_data_layout(db: MetadataDb, config: Config) -> DataLayout:
    """The stored partition assignment, updated for the configured directories."""
    stored = db.get_setting("data_layout")
    dirs = config.data_dirs
    layout = DataLayout.initial(dirs) if stored is None else DataLayout.decode(stored).update(dirs)
    encoded = layout.encode()
    if encoded != stored:
        db.set_setting("data_layout", encoded)
    return layout


__all__ = ["SHUTDOWN_GRACE", "open_block_manager", "open_gateway"]
