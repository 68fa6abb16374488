"""``open_cluster``: N trioblock nodes in one ``trio.run``, over a ``MemoryNetwork``.

Each node runs in its own task inside the cluster's nursery, with its own directories
under ``tmp_path/<node_id>``. ``stop`` closes a node cleanly, ``kill`` cancels it
abruptly (as a crash would: durable writes in progress still complete, nothing else is
waited for), ``start`` opens it again on the same directories, and ``wipe`` stops it,
deletes its metadata and data, and starts it empty.

With ``disk="simulated"`` each node's block files live on its own
:class:`~trioblock.testing.SimulatedDisk` (``cluster.disk(node_id)``), and
``power_loss`` cuts a node's power. The SQLite metadata stays on the real disk under
``tmp_path`` either way: Python's ``sqlite3`` cannot run on a simulated file system.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from .._core.config import Config
from .._core.layoutversion import LayoutVersion
from .._core.placement import JoinCluster, Layout, StaticLayout
from .._net.tcp import TcpTransport
from .._net.transport import Transport
from .._node import BlockManager, open_block_manager, open_gateway, service_nursery
from .._storage import run_blocking
from ._memory import MemoryNetwork
from ._simdisk import SimulatedDisk
from ._simfs import Outcome, PowerLoss

#: What ``open_cluster(disk=...)`` accepts: the real disk or one simulated disk per node.
DiskKind = Literal["real", "simulated"]


@dataclass
class _NodeTask:
    stop: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Cluster:
    """A running in-process cluster. Create it with :func:`open_cluster`.

    Attributes: ``node_ids`` (``["n0", "n1", …]``), ``nodes`` (the running nodes by id,
    as :class:`~trioblock.BlockManager`; a stopped node is absent until started again),
    ``net`` (the :class:`MemoryNetwork` to inject faults with), ``layout`` (the
    cluster's current :class:`~trioblock.LayoutVersion`: the newest any running node
    holds), ``bootstrap`` (the :class:`~trioblock.StaticLayout` the first nodes started
    from), ``root`` (the directory holding each node's ``<id>/meta`` and ``<id>/data``),
    ``rpc_secret``, ``config_overrides``, ``disk_kind`` (``"real"`` or ``"simulated"``)
    and ``seed`` (the simulated disks').
    """

    def __init__(
        self,
        root: Path,
        node_ids: list[str],
        *,
        net: MemoryNetwork,
        layout: StaticLayout,
        rpc_secret: bytes,
        config_overrides: Mapping[str, Any],
        nursery: trio.Nursery,
        transports: Mapping[str, Transport] | None = None,
        disk: DiskKind = "real",
        seed: int = 0,
    ) -> None:
        if disk not in ("real", "simulated"):
            raise ValueError(f"disk must be 'real' or 'simulated', got {disk!r}")
        self.disk_kind: DiskKind = disk
        self.seed = seed
        self._disks: dict[str, SimulatedDisk] = {}
        self.root = root
        self.node_ids = node_ids
        self.net = net
        self.bootstrap = layout
        self._last_layout: Layout = layout
        #: nodes added with add_node (they join: they learn the layout from the others)
        self.joined: set[str] = set()
        self.rpc_secret = rpc_secret
        self.config_overrides = dict(config_overrides)
        #: the running nodes; a stopped node is absent until started again
        self.nodes: dict[str, BlockManager] = {}
        self._nursery = nursery
        self._tasks: dict[str, _NodeTask] = {}
        self._transports = dict(transports or {})

    @property
    def layout(self) -> Layout:
        """The cluster's current layout version: the newest any running node holds (the
        last one seen while none runs)."""
        versions = [bm.layout for bm in self.nodes.values()]
        newest = max(
            (v for v in versions if isinstance(v, LayoutVersion)),
            key=lambda v: v.version,
            default=None,
        )
        if newest is not None:
            self._last_layout = newest
        return self._last_layout

    def address(self, node_id: str) -> str | None:
        """``"host:port"`` of a node over TCP (for its ``NodeRole``); None in memory."""
        t = self._transports.get(node_id)
        if isinstance(t, TcpTransport) and t.listen_address is not None:
            host, port = t.listen_address
            return f"{host}:{port}"
        return None

    async def add_node(self, node_id: str) -> BlockManager:
        """Start a fresh node (own directories) that knows the cluster and holds no
        role until a layout version gives it one (``await bm.apply_layout(...)`` on any
        node); return it. Over TCP it listens on a free port: :meth:`address` gives it."""
        if node_id in self.node_ids:
            raise ValueError(f"{node_id!r} is a node of this cluster already")
        if self._transports:
            tcp = TcpTransport(listen=("127.0.0.1", 0))
            address = await tcp.bind()
            for n, t in self._transports.items():
                if isinstance(t, TcpTransport) and t.listen_address is not None:
                    tcp.add_peer(n, t.listen_address)
                    t.add_peer(node_id, address)
            self._transports[node_id] = tcp
        self.node_ids.append(node_id)
        self.joined.add(node_id)
        bm = await self.start(node_id)
        await bm.sync_layout()
        return bm

    def _layout_for(self, node_id: str) -> Layout:
        if node_id in self.joined:
            return JoinCluster([n for n in self.node_ids if n != node_id])
        return self.bootstrap

    def data_dir(self, node_id: str) -> Path:
        """Where node ``node_id`` keeps its blocks."""
        return self.root / node_id / "data"

    def disk(self, node_id: str) -> SimulatedDisk:
        """Node ``node_id``'s :class:`SimulatedDisk` (``disk="simulated"`` only), made on
        first use and kept across restarts, seeded from the cluster's ``seed`` and the
        node id: its faults are the test's to arm (``fail``, ``set_capacity``, ``rot``…).
        """
        if self.disk_kind != "simulated":
            raise RuntimeError("this cluster runs on the real disk: open it with disk='simulated'")
        found = self._disks.get(node_id)
        if found is None:
            node_seed = random.Random(f"{self.seed}/{node_id}").getrandbits(64)
            found = self._disks[node_id] = SimulatedDisk(node_seed)
        return found

    def metadata_dir(self, node_id: str) -> Path:
        """Where node ``node_id`` keeps its database."""
        return self.root / node_id / "meta"

    def config(self, node_id: str) -> Config:
        """The configuration node ``node_id`` is started with."""
        overrides = dict(self.config_overrides)
        if self.disk_kind == "simulated":
            overrides["disk"] = self.disk(node_id)
        return Config(
            node_id=node_id,
            metadata_dir=self.metadata_dir(node_id),
            data_dir=self.data_dir(node_id),
            rpc_secret=self.rpc_secret,
            **overrides,
        )

    def transport(self, node_id: str) -> Transport:
        """The node's transport: its ``TcpTransport`` or its end of the ``MemoryNetwork``."""
        return self._transports.get(node_id) or self.net.transport(node_id)

    async def _run_node(
        self, node_id: str, task: _NodeTask, *, task_status: trio.TaskStatus[BlockManager]
    ) -> None:
        try:
            with task.scope:
                async with open_block_manager(
                    self.config(node_id),
                    layout=self._layout_for(node_id),
                    transport=self.transport(node_id),
                ) as bm:
                    self.nodes[node_id] = bm
                    task_status.started(bm)
                    try:
                        await task.stop.wait()
                    finally:
                        if self.nodes.get(node_id) is bm:
                            del self.nodes[node_id]
        finally:
            task.closed.set()

    async def start(self, node_id: str) -> BlockManager:
        """Open ``node_id`` (again) on its directories; return the new BlockManager."""
        if node_id not in self.node_ids:
            raise KeyError(f"unknown node {node_id!r}")
        if node_id in self._tasks:
            raise RuntimeError(f"node {node_id} is already running")
        task = _NodeTask()
        self._tasks[node_id] = task
        try:
            bm: BlockManager = await self._nursery.start(self._run_node, node_id, task)
        except BaseException:
            del self._tasks[node_id]
            raise
        return bm

    async def stop(self, node_id: str) -> None:
        """Close ``node_id`` cleanly (workers finish their unit, database closed)."""
        task = self._tasks.pop(node_id, None)
        if task is None:
            return
        task.stop.set()
        await task.closed.wait()

    async def kill(self, node_id: str) -> None:
        """Stop ``node_id`` abruptly, as a crash would."""
        task = self._tasks.pop(node_id, None)
        if task is None:
            return
        task.scope.cancel()
        await task.closed.wait()

    async def power_loss(self, node_id: str, outcome: Outcome = "random") -> PowerLoss:
        """Cut node ``node_id``'s power: :meth:`kill` it, apply
        :meth:`SimulatedDisk.power_loss` to its disk (``outcome`` as there) and start it
        again (``disk="simulated"`` only; a node that was not running stays stopped).
        Its metadata, on the real disk, keeps every committed transaction. Returns what
        the power loss did."""
        disk = self.disk(node_id)
        running = node_id in self._tasks
        await self.kill(node_id)
        done = disk.power_loss(outcome)
        if running:
            await self.start(node_id)
        return done

    async def restart(self, node_id: str) -> BlockManager:
        """Stop ``node_id`` cleanly and start it again; the new node."""
        await self.stop(node_id)
        return await self.start(node_id)

    async def wipe(self, node_id: str) -> BlockManager:
        """Stop ``node_id``, delete its metadata and data, and start it empty."""
        await self.stop(node_id)
        await run_blocking(shutil.rmtree, self.root / node_id, True)
        simulated = self._disks.get(node_id)
        if simulated is not None and simulated.exists(self.data_dir(node_id)):
            simulated.delete(self.data_dir(node_id))
        return await self.start(node_id)

    @asynccontextmanager
    async def open_gateway(self, node_id: str = "gateway") -> AsyncIterator[BlockManager]:
        """A gateway into this cluster (a node that stores nothing; see ``open_gateway``).

        ``async with cluster.open_gateway("app") as gw:`` — ``node_id`` must not be one
        of the cluster's nodes. It uses the cluster's transport kind, layout, secret and
        configuration overrides.
        """
        if node_id in self.node_ids:
            raise ValueError(f"{node_id!r} is a storage node of this cluster")
        tcp: TcpTransport | None = None
        if self._transports:
            tcp = TcpTransport(
                peers={
                    n: t.listen_address
                    for n, t in self._transports.items()
                    if isinstance(t, TcpTransport) and t.listen_address is not None
                }
            )
        transport: Transport = tcp if tcp is not None else self.net.transport(node_id)
        try:
            async with open_gateway(
                node_id,
                layout=self.bootstrap,
                transport=transport,
                rpc_secret=self.rpc_secret,
                **self.config_overrides,
            ) as gateway:
                yield gateway
        finally:
            if tcp is not None:
                with trio.CancelScope(shield=True):
                    await tcp.aclose()

    def running(self) -> list[str]:
        """The ids of the nodes running now, in ``node_ids`` order."""
        return [n for n in self.node_ids if n in self.nodes]

    async def aclose(self) -> None:
        """Stop every node (done by :func:`open_cluster` on exit)."""
        with trio.CancelScope(shield=True):
            for node_id in list(self._tasks):
                await self.stop(node_id)


@asynccontextmanager
async def open_cluster(
    tmp_path: Path | str,
    n: int = 3,
    *,
    replication_factor: int = 3,
    write_quorum: int | None = None,
    rpc_secret: bytes = b"test",
    zones: Mapping[str, str] | None = None,
    transport: str = "memory",
    disk: DiskKind = "real",
    seed: int = 0,
    **config_overrides: Any,
) -> AsyncIterator[Cluster]:
    """Run ``n`` nodes ``"n0"``, ``"n1"``, … over a :class:`MemoryNetwork`.

    ``config_overrides`` are passed to every node's :class:`~trioblock.Config`
    (``gc_delay=60``, ``compression_level=None``, …). ``zones`` optionally maps node ids
    to zones for zone-aware placement. ``replication_factor`` is capped at ``n``.

    ``transport="tcp"`` runs the nodes over :class:`~trioblock.TcpTransport` on
    127.0.0.1 (free ports) instead; the ``MemoryNetwork`` fault controls then do
    nothing, and tests should use the real clock (sockets and a MockClock's autojump do
    not mix).

    ``disk="simulated"`` gives each node its own :class:`SimulatedDisk` for its block
    files (``cluster.disk(node_id)``; seeded from ``seed`` and the node id), and enables
    ``cluster.power_loss(node_id)``; the metadata stays on the real disk. ``"real"``
    (the default) keeps everything under ``tmp_path``.
    """
    root = Path(tmp_path)
    node_ids = [f"n{i}" for i in range(n)]
    layout = StaticLayout(
        {nid: (zones or {}).get(nid, "") for nid in node_ids} if zones else node_ids,
        replication_factor=min(replication_factor, n),
        write_quorum=write_quorum,
    )
    net = MemoryNetwork()
    transports: dict[str, Transport] = {}
    if transport == "tcp":
        tcp = {nid: TcpTransport(listen=("127.0.0.1", 0)) for nid in node_ids}
        addresses = {nid: await t.bind() for nid, t in tcp.items()}
        for t in tcp.values():
            for nid, address in addresses.items():
                t.add_peer(nid, address)
        transports.update(tcp)
    elif transport != "memory":
        raise ValueError(f"transport must be 'memory' or 'tcp', got {transport!r}")
    async with service_nursery("in-process cluster") as nursery:
        cluster = Cluster(
            root,
            node_ids,
            net=net,
            layout=layout,
            rpc_secret=rpc_secret,
            config_overrides=config_overrides,
            nursery=nursery,
            transports=transports,
            disk=disk,
            seed=seed,
        )
        try:
            for node_id in node_ids:
                await cluster.start(node_id)
            yield cluster
        finally:
            await cluster.aclose()
            with trio.CancelScope(shield=True):
                for transport_ in transports.values():
                    if isinstance(transport_, TcpTransport):
                        await transport_.aclose()
