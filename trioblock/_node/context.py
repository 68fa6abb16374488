"""What the node's collaborators share: one :class:`NodeContext` per open node.

``open_block_manager`` builds the context (configuration, layout, database, block
store, clock, RPC client, limiters, byte budget, metrics, the resync workers' shared
state) and hands it to each collaborator (writes, reads, reference counts, resync,
endpoint, operations). The context also knows whether the node is open: every public
entry point calls :meth:`NodeContext.require_open`, which raises ``NodeClosedError``
once the node is closing or closed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import trio
from trio_util import AsyncValue

from .._core.config import Config
from .._core.hashing import Hash
from .._core.hedging import HedgePolicy
from .._core.placement import Layout
from .._net.rpc import RpcNode
from .._storage import BlockLocation, BlockStore, MetadataDb, run_blocking
from ..errors import CorruptBlockError, NodeClosedError
from .budget import ByteBudget
from .clock import NodeClock
from .metrics import Metrics

log = logging.getLogger("trioblock.node")


#: Most queue keys :attr:`ResyncShared.needs_work` holds.
NEEDS_WORK_MAX = 10_000


class ResyncShared:
    """State the resync workers share: busy set, settings, pool size, queue notifications.

    ``n_workers`` is the operator's setting and the pool's floor: that many workers
    always run. ``active`` is how many run now: the floor, plus the ones the pool added
    while a backlog of overdue entries built up (up to ``MAX_RESYNC_WORKERS``, see
    ``_core/resync.py``). Setting ``n_workers`` resets ``active`` to it.
    """

    def __init__(self, workers: int, tranquility: int) -> None:
        self.busy: set[Hash] = set()
        self._floor = workers
        #: workers running now (resync-0 … resync-<active-1>); floor <= active <= 8
        self.active = workers
        #: trio time when the pool last added a worker (None: never)
        self.grown_at: float | None = None
        self.tranquility = tranquility
        #: queue keys a batched look found needing real work (not looked at again)
        self.needs_work: set[bytes] = set()
        #: the last queue key looked at past those (None: start from the head again)
        self.scan_cursor: bytes | None = None
        #: bumped on every queue change; a worker idles until it moves past its token
        self.generation = AsyncValue(0)

    @property
    def n_workers(self) -> int:
        """The operator's worker count: the floor of the pool."""
        return self._floor

    @n_workers.setter
    def n_workers(self, n: int) -> None:
        self._floor = n
        self.active = n

    def remember_work(self, keys: Iterable[bytes]) -> None:
        """Remember queue entries that need real work (bounded: forgotten past
        ``NEEDS_WORK_MAX``, which only costs another look)."""
        if len(self.needs_work) > NEEDS_WORK_MAX:
            self.needs_work.clear()
        self.needs_work.update(keys)

    def notify(self) -> None:
        self.generation.value += 1


class CorruptCopy(NamedTuple):
    """What :meth:`NodeContext.corrupt_copy_found` did."""

    #: counted in ``metrics.corruptions`` (and queued): the copy was indeed corrupt
    counted: bool
    #: where the copy was moved (``*.corrupted``), if it was quarantined by this call
    quarantined: Path | None


def as_hash(value: bytes) -> Hash:
    """``value`` as a :class:`Hash` (``ValueError`` unless it is 32 bytes)."""
    return value if isinstance(value, Hash) else Hash(value)


@dataclass(eq=False, kw_only=True)
class PeerContext:
    """What every node has, a gateway included: configuration, layout, clock, network."""

    config: Config
    layout: Layout
    clock: NodeClock
    rpc: RpcNode | None
    metrics: Metrics = field(default_factory=Metrics)
    #: set when the node starts leaving its context; workers stop between units
    stopping: trio.Event = field(default_factory=trio.Event)
    nursery: trio.Nursery | None = None
    #: set once the node is closed
    closed: bool = False

    def __post_init__(self) -> None:
        self.cpu_limiter = trio.CapacityLimiter(self.config.disk_threads)
        self.budget = ByteBudget(self.config.ram_buffer_max)
        self.hedge = HedgePolicy(ceiling=self.config.rpc_timeout)
        #: the live layout versions, oldest first (the last is ``layout``)
        self.live_layouts: tuple[Layout, ...] = (self.layout,)
        #: this node's storage side: itself on a storage node, None on a gateway (which
        #: stores nothing); decided here, when the node is built, for every collaborator
        self.local: NodeContext | None = None

    def set_layouts(self, live: Sequence[Layout]) -> None:
        """Make ``live`` (oldest first) the live layouts; the last is the current one."""
        self.live_layouts = tuple(live)
        self.layout = self.live_layouts[-1]

    @property
    def node_id(self) -> str:
        return self.config.node_id

    # -- open or closed ---------------------------------------------------------------------

    def require_open(self) -> trio.Nursery:
        """The node's nursery; ``NodeClosedError`` when the node is closing or closed."""
        if self.nursery is None or self.stopping.is_set() or self.closed:
            raise NodeClosedError(self.node_id)
        return self.nursery

    def spawn_background(
        self, what: str, fn: Callable[..., Awaitable[object]], *args: object
    ) -> None:
        """Run ``fn(*args)`` in the node's nursery; log (never raise) its failure.

        Does nothing once the node is closing.
        """
        nursery = self.nursery
        if nursery is None or self.stopping.is_set():
            return

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                log.warning("%s: %s failed: %s", self.node_id, what, describe(exc))

        nursery.start_soon(guarded)

    # -- placement --------------------------------------------------------------------------

    def is_storage_node(self, hash: bytes) -> bool:
        """Whether the current layout version gives this node a copy of ``hash``."""
        return self.node_id in self.layout.storage_nodes(hash)

    def stores_in_live(self, node_id: str, hash: bytes) -> bool:
        """Whether any live layout version gives ``node_id`` a copy of ``hash``."""
        return any(node_id in v.storage_nodes(hash) for v in self.live_layouts)

    def peers_for_read(self, hash: bytes) -> list[str]:
        """The other nodes to ask for ``hash``: the current version's first, then those
        of older live versions (newest first), each once."""
        order = list(self.layout.read_nodes(hash))
        for older in reversed(self.live_layouts[:-1]):
            order.extend(older.storage_nodes(hash))
        return [n for n in dict.fromkeys(order) if n != self.node_id]

    def write_sets(self, hash: bytes) -> list[tuple[list[str], int]]:
        """For a reference update: each live version's storage nodes of ``hash`` with
        its write quorum (every one of them must reach its quorum)."""
        sets: list[tuple[list[str], int]] = []
        for v in self.live_layouts:
            entry = (v.storage_nodes(hash), v.write_quorum)
            if entry not in sets:
                sets.append(entry)
        return sets

    def live_nodes(self) -> list[str]:
        """Every node of a live layout version, sorted."""
        return sorted({n for v in self.live_layouts for n in v.nodes})


@dataclass(eq=False, kw_only=True)
class NodeContext(PeerContext):
    """A storage node's shared parts: the above, plus its database and data directories."""

    db: MetadataDb
    store: BlockStore
    resync: ResyncShared
    db_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cpu_limiter = self.store.limiter
        self.local = self

    @property
    def resync_retry_delay_msec(self) -> int:
        return self.config.resync_retry_delay_msec

    # -- the resync queue -------------------------------------------------------------------

    def notify_resync(self) -> None:
        self.resync.notify()

    async def put_to_resync(self, hash: bytes, delay_msec: int = 0) -> None:
        """Queue a resync check of ``hash`` after ``delay_msec``.

        A background write: it waits for a transaction another task holds open.
        """
        await self.db.queue_put(hash, self.clock.now_msec() + delay_msec)
        self.notify_resync()

    # -- corrupt copies ---------------------------------------------------------------------

    async def corrupt_copy_found(
        self,
        hash: Hash,
        where: BlockLocation | CorruptBlockError | None = None,
        *,
        confirm: bool = False,
        resync: bool = True,
    ) -> CorruptCopy:
        """The one policy for a corrupt local copy of ``hash``: quarantine, count, resync.

        ``where``: the copy still to quarantine (or the error naming it); None when the
        store quarantined it already or it is not known. The quarantine re-verifies the
        copy under the block's lock; a copy in a read-only directory is never modified
        (logged instead). Then the corruption is counted and, with ``resync``, the block
        queued for an immediate resync. With ``confirm``, a copy that turns out valid,
        gone or replaced meanwhile is neither counted nor queued.
        """
        loc = where.location if isinstance(where, CorruptBlockError) else where
        quarantined: Path | None = None
        if isinstance(loc, BlockLocation):
            store = self.store
            if store.in_read_only_dir(loc.path_str):
                if confirm and await run_blocking(
                    store.verify_file_sync, loc, limiter=store.limiter
                ):
                    return CorruptCopy(False, None)
                log.warning("%s: %s is corrupt in a read-only directory", self.node_id, loc.path)
            else:
                quarantined = await store.quarantine(loc)
                if quarantined is None and confirm:
                    return CorruptCopy(False, None)
        self.metrics.corruptions += 1
        if resync:
            await self.put_to_resync(hash, 0)
        return CorruptCopy(True, quarantined)


def describe(exc: BaseException) -> str:
    """A readable account of ``exc``: the leaves of an exception group, one by one."""
    if isinstance(exc, BaseExceptionGroup):
        parts = [describe(e) for e in exc.exceptions]
        return "; ".join(parts) if parts else repr(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["CorruptCopy", "NodeContext", "PeerContext", "ResyncShared", "as_hash", "describe"]
