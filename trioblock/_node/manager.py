"""The block manager: one node's puts, gets, reference counts and background work.

``open_block_manager`` owns the node's nursery. Inside it run the RPC server (when a
transport is given), the resync workers and the scrub worker; leaving the context stops
them between units and closes the database.

How a put travels: hash and compress once in a worker thread → for every storage node of
the hash (just this one on the embedded default) write locally under the block's lock or
send a ``PutBlock`` → return when ``write_quorum`` nodes acknowledged a durable write,
while the remaining sends finish in the node's nursery. How a get travels: the local
copy (read and verified in a worker thread), then peers in the layout's read order with
a hedged second request when the first is slow; every copy is verified before use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import trio

from .._core.block import BlockHeader, DataBlock, decode_block, hash_and_encode
from .._core.config import Config
from .._core.datalayout import DataLayout
from .._core.hashing import Hash
from .._core.hedging import HedgePolicy
from .._core.placement import Layout, LocalLayout
from .._core.resync import ResyncAction, decide_resync, offload_allowed
from .._net.rpc import RpcNode
from .._net.transport import Transport
from .._storage.blockfiles import BlockLocation, BlockStore, WriteOutcome, block_path
from .._storage.metadata import MetadataDb, ResyncErrorInfo, Transaction
from .._storage.offload import run_blocking
from ..errors import (
    ConfigError,
    CorruptBlockError,
    MissingBlockError,
    QuorumError,
    TransportError,
    TrioblockError,
)
from .budget import ByteBudget
from .clock import NodeClock
from .endpoint import RpcEndpoint
from .metrics import Metrics
from .nurseries import service_nursery
from .operations import OperationsMixin
from .resync import ResyncShared, ResyncWorker
from .streaming import VerifiedChunks
from .workers import Worker, WorkerInfo, run_worker

log = logging.getLogger("trioblock.node")

#: Extra delay after the GC delay before the deletion check runs (as Garage does).
GC_CHECK_SLACK_MSEC = 10_000
#: How long leaving the context waits for workers to finish their current unit.
SHUTDOWN_GRACE = 10.0


class Completed:
    """The result of an operator action that is done when the call returns.

    It may be awaited (``await bm.purge(h)``) or not (``bm.purge(h)``): both work, and
    neither leaves a never-awaited coroutine behind.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        yield from ()
        return self.value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __repr__(self) -> str:
        return f"Completed({self.value!r})"


def _as_hash(value: bytes) -> Hash:
    return value if isinstance(value, Hash) else Hash(value)


class BlockManager(OperationsMixin):
    """One trioblock node. Create it with :func:`open_block_manager`."""

    def __init__(
        self,
        config: Config,
        *,
        layout: Layout,
        db: MetadataDb,
        store: BlockStore,
        clock: NodeClock,
        rpc: RpcNode | None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.layout = layout
        self.db = db
        self.store = store
        self.clock = clock
        self.rpc = rpc
        self.metrics = Metrics()
        self.db_limiter = trio.CapacityLimiter(1)
        self.cpu_limiter = store.limiter
        self.budget = ByteBudget(config.ram_buffer_max)
        self.hedge = HedgePolicy(ceiling=config.rpc_timeout)
        workers = db.get_setting("resync_workers", config.resync_workers)
        tranquility = db.get_setting("resync_tranquility", config.resync_tranquility)
        self.resync = ResyncShared(workers, tranquility)
        self._nursery: trio.Nursery | None = None
        self.opened_monotonic = time.monotonic()
        self._stopping = trio.Event()
        self._workers: list[Worker] = []
        self._running_workers = 0
        self._workers_stopped = trio.Event()

    # ---------------------------------------------------------------------------------------
    # Properties and small helpers

    @property
    def resync_retry_delay_msec(self) -> int:
        return self.config.resync_retry_delay_msec

    @property
    def _level(self) -> int | None:
        return self.config.compression_level

    def _is_storage_node(self, hash: bytes) -> bool:
        return self.node_id in self.layout.storage_nodes(hash)

    def _peers_for_read(self, hash: bytes) -> list[str]:
        return [n for n in self.layout.read_nodes(hash) if n != self.node_id]

    def _require_open(self) -> trio.Nursery:
        if self._nursery is None or self._stopping.is_set():
            raise RuntimeError("this BlockManager is closed")
        return self._nursery

    def _notify_resync(self) -> None:
        self.resync.notify()

    def put_to_resync(self, hash: bytes, delay_msec: int = 0) -> None:
        """Queue a resync check of ``hash`` after ``delay_msec`` (sync, foreground DB)."""
        self.db.put_to_resync_fg(hash, self.clock.now_msec() + delay_msec)
        self._notify_resync()

    # ---------------------------------------------------------------------------------------
    # Writing

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.config.max_block_size:
            raise ValueError(
                f"block of {len(data)} bytes exceeds max_block_size ({self.config.max_block_size})"
            )

    async def put_block(self, data: bytes, *, compress: bool = True) -> Hash:
        """Store ``data`` on its storage nodes; return its hash once a write quorum holds it.

        Raises ``QuorumError`` (with each failed node's cause) when fewer than
        ``write_quorum`` nodes acknowledged a durable write.
        """
        self._check_size(data)
        level = self._level if compress else None
        hash, block = await run_blocking(hash_and_encode, data, level, limiter=self.cpu_limiter)
        await self._put_encoded(hash, block)
        return hash

    async def rpc_put_block(self, hash: bytes, data: bytes, *, compress: bool = True) -> None:
        """Like :meth:`put_block` with the hash given; ``ValueError`` if it does not match."""
        expected = _as_hash(hash)
        self._check_size(data)
        level = self._level if compress else None
        actual, block = await run_blocking(hash_and_encode, data, level, limiter=self.cpu_limiter)
        if actual != expected:
            raise ValueError(f"data hashes to {actual.hex()}, not {expected.hex()}")
        await self._put_encoded(expected, block)

    async def _write_local(self, hash: Hash, block: DataBlock) -> WriteOutcome:
        started = trio.current_time()
        outcome = await self.store.write_block(hash, block, self.clock.now_msec())
        self.metrics.write_duration.observe(trio.current_time() - started)
        if outcome is not WriteOutcome.KEPT:
            self.metrics.bytes_written += len(block)
        return outcome

    async def _put_encoded(self, hash: Hash, block: DataBlock) -> None:
        self._require_open()
        self.metrics.puts += 1
        targets = self.layout.storage_nodes(hash)
        quorum = self.layout.write_quorum
        if targets == [self.node_id]:
            await self._write_local(hash, block)
            return
        await self._replicate(hash, block, targets, quorum)

    async def _send_one(self, node: str, hash: Hash, block: DataBlock, background: bool) -> None:
        if node == self.node_id:
            await self._write_local(hash, block)
            return
        if self.rpc is None:
            raise TransportError(f"no transport configured to reach node {node}")
        with trio.fail_after(self.config.rpc_timeout):
            await self.rpc.put_block(node, hash, block, background=background)

    async def _replicate(
        self, hash: Hash, block: DataBlock, targets: list[str], quorum: int
    ) -> None:
        """Send to every target at once; return at quorum, let the rest finish in the node."""
        nursery = self._require_open()
        taken = await self.budget.acquire(len(block) * max(1, len(targets) - 1))
        done = trio.Event()
        successes = 0
        failures: dict[str, BaseException] = {}
        pending = len(targets)

        async def send(node: str) -> None:
            nonlocal successes, pending
            try:
                await self._send_one(node, hash, block, background=False)
            except Exception as exc:  # recorded per node in the QuorumError
                failures[node] = exc
                log.debug("put %s to %s failed: %r", hash.short(), node, exc)
            else:
                successes += 1
            finally:
                pending -= 1
                if successes >= quorum or successes + pending < quorum:
                    done.set()
                if pending == 0:
                    self.budget.release(taken)

        for node in targets:
            nursery.start_soon(send, node)
        await done.wait()
        if successes < quorum:
            raise QuorumError(
                f"block {hash.hex()} could not be written to a quorum",
                quorum=quorum,
                successes=successes,
                errors=failures,
            )

    # ---------------------------------------------------------------------------------------
    # Reading

    async def _read_local(self, hash: Hash) -> tuple[bytes, DataBlock] | None:
        """Verified local copy, or None; a corrupt copy is quarantined and queued."""
        started = trio.current_time()
        try:
            found = await self.store.read_verified(hash)
        except CorruptBlockError:
            self.metrics.corruptions += 1
            self.put_to_resync(hash, 0)
            raise
        if found is None:
            return None
        plaintext, block, _loc = found
        self.metrics.read_duration.observe(trio.current_time() - started)
        self.metrics.bytes_read += len(block)
        return plaintext, block

    async def _fetch_verified(
        self, node: str, hash: Hash, background: bool
    ) -> tuple[bytes, DataBlock]:
        assert self.rpc is not None
        with trio.fail_after(self.config.rpc_timeout):
            block = await self.rpc.get_block(node, hash, background=background)
        plaintext = await run_blocking(
            lambda: decode_block(hash, block, max_size=self.config.max_block_size),
            limiter=self.cpu_limiter,
        )
        return plaintext, block

    async def _read_from_peers(
        self, hash: Hash, peers: list[str], *, background: bool = False
    ) -> tuple[bytes, DataBlock]:
        """First valid copy from ``peers``, hedging when the current request is slow."""
        if not peers or self.rpc is None:
            raise MissingBlockError(hash)
        result: list[tuple[bytes, DataBlock]] = []
        failures: dict[str, BaseException] = {}

        async with trio.open_nursery() as nursery:
            for index, node in enumerate(peers):
                attempt_done = trio.Event()

                async def attempt(
                    node: str = node, attempt_done: trio.Event = attempt_done
                ) -> None:
                    started = trio.current_time()
                    try:
                        got = await self._fetch_verified(node, hash, background)
                    except Exception as exc:  # a peer's failure, whatever it is, is that peer's
                        failures[node] = exc
                        if isinstance(exc, CorruptBlockError):
                            self.metrics.corruptions += 1
                        log.debug("get %s from %s failed: %r", hash.short(), node, exc)
                    else:
                        self.hedge.observe(trio.current_time() - started)
                        if not result:
                            result.append(got)
                        nursery.cancel_scope.cancel()
                    finally:
                        attempt_done.set()

                nursery.start_soon(attempt)
                if index + 1 < len(peers):
                    with trio.move_on_after(self.hedge.threshold()) as waited:
                        await attempt_done.wait()
                    if waited.cancelled_caught:
                        self.metrics.hedged_reads += 1
        if result:
            return result[0]
        if failures and all(isinstance(e, CorruptBlockError) for e in failures.values()):
            raise CorruptBlockError(hash, f"every copy of {hash.hex()} from peers was corrupt")
        raise MissingBlockError(
            hash,
            f"block {hash.hex()} not found: "
            + "; ".join(f"{n}: {e!r}" for n, e in sorted(failures.items())),
        )

    async def get_block(self, hash: bytes) -> bytes:
        """The block's plaintext, verified: local copy first, then peers (hedged).

        Raises ``MissingBlockError`` when no node returns a valid copy, or
        ``CorruptBlockError`` when the only copies found were corrupt.
        """
        h = _as_hash(hash)
        self._require_open()
        self.metrics.gets += 1
        local_corrupt: CorruptBlockError | None = None
        try:
            local = await self._read_local(h)
        except CorruptBlockError as exc:
            local_corrupt, local = exc, None
        if local is not None:
            return local[0]
        try:
            plaintext, block = await self._read_from_peers(h, self._peers_for_read(h))
        except MissingBlockError:
            if local_corrupt is not None:
                raise local_corrupt from None
            raise
        if self._is_storage_node(h) and self.db.get_rc(h).is_nonzero:
            # We should have had it: keep the verified copy we just received.
            self._spawn_background(f"read repair of {h.short()}", self._write_local, h, block)
        return plaintext

    def _spawn_background(
        self, what: str, fn: Callable[..., Awaitable[object]], *args: object
    ) -> None:
        """Run ``fn(*args)`` in the node's nursery; log (never raise) its failure."""
        nursery = self._nursery
        if nursery is None or self._stopping.is_set():
            return

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                log.warning("%s failed: %r", what, exc)

        nursery.start_soon(guarded)

    @asynccontextmanager
    async def stream_block(self, hash: bytes) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream the block's plaintext in chunks, verifying as it goes.

        The last chunk is held back until the whole block has been verified, so a corrupt
        block raises ``CorruptBlockError`` before the consumer has seen all of it.
        """
        h = _as_hash(hash)
        self._require_open()
        self.metrics.gets += 1
        loc = await self.store.find(h)
        if loc is not None:
            async with self.store.open_stream(loc) as encoded:
                yield VerifiedChunks(self, h, loc.header, encoded, loc)
            return
        peers = self._peers_for_read(h)
        if self.rpc is None or not peers:
            raise MissingBlockError(h)
        failures: dict[str, BaseException] = {}
        for node in peers:
            stack = AsyncExitStack()
            try:
                with trio.fail_after(self.config.rpc_timeout):
                    header, body = await stack.enter_async_context(self.rpc.stream_block(node, h))
            except Exception as exc:
                await stack.aclose()
                failures[node] = exc
                continue
            async with stack:
                yield VerifiedChunks(self, h, header, body, None)
            return
        raise MissingBlockError(
            h,
            f"block {h.hex()} not found: " + "; ".join(f"{n}: {e!r}" for n, e in failures.items()),
        )

    async def has_local_block(self, hash: bytes) -> bool:
        """Whether a copy of the block exists in this node's data directories."""
        return await self.store.exists(_as_hash(hash))

    # ---------------------------------------------------------------------------------------
    # Reference counts

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A transaction on the node's database, for callers with their own tables.

        ``with bm.transaction() as tx: tx.execute(...); bm.incref(h, tx)`` commits the
        caller's rows and the reference change together. Do not ``await`` inside it:
        the connection is shared with the node's synchronous API.
        """
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        with self.db.transaction() as tx:
            tx.on_commit.append(self._notify_resync)
            yield tx

    def incref(self, hash: bytes, tx: Transaction | None = None) -> int:
        """Add a reference to a block; return the new count.

        When the count leaves zero, a resync check is queued in ``2 × rpc_timeout`` (in
        the same transaction) to fetch the block should it not arrive.
        """
        h = _as_hash(hash)
        now = self.clock.now_msec()
        entry, queued = self.db.incref(
            h, now_msec=now, resync_at=now + 2 * self.config.rpc_timeout_msec, tx=tx
        )
        if queued and tx is None:
            self._notify_resync()
        return entry.count

    def decref(self, hash: bytes, tx: Transaction | None = None) -> int:
        """Drop a reference; return the new count.

        When it reaches zero the block becomes deletable after ``gc_delay``; the deletion
        check is queued for ``gc_delay + 10 s`` in the same transaction.
        """
        h = _as_hash(hash)
        entry, queued = self.db.decref(
            h,
            now_msec=self.clock.now_msec(),
            gc_delay_msec=self.config.gc_delay_msec,
            resync_delay_msec=self.config.gc_delay_msec + GC_CHECK_SLACK_MSEC,
            tx=tx,
        )
        if queued and tx is None:
            self._notify_resync()
        return entry.count

    def get_block_rc(self, hash: bytes) -> int:
        """The local reference count of a block (0 when unreferenced)."""
        return self.db.get_rc(_as_hash(hash)).count

    def rc_len(self) -> int:
        """Rows in the reference-count table (referenced or awaiting deletion)."""
        return self.db.rc_len()

    def resync_queue_len(self) -> int:
        """Entries in the resync queue (pending checks, due or not)."""
        return self.db.resync_queue_len()

    def resync_errors_len(self) -> int:
        """Blocks whose last resync failed (see :meth:`list_resync_errors`)."""
        return self.db.resync_errors_len()

    # ---------------------------------------------------------------------------------------
    # Operator actions

    def list_resync_errors(self) -> list[ResyncErrorInfo]:
        """Blocks whose resync failed, with their back-off state."""
        return self.db.list_resync_errors(self.resync_retry_delay_msec)

    def retry_now(self, hash: bytes) -> Completed:
        """Clear the back-off of an errored block and queue it for now."""
        had_error = self.db.retry_now(_as_hash(hash), self.clock.now_msec())
        self._notify_resync()
        return Completed(had_error)

    def retry_all_now(self) -> Completed:
        count = self.db.retry_all_now(self.clock.now_msec())
        self._notify_resync()
        return Completed(count)

    def purge(self, hash: bytes) -> Completed:
        """Forget an unrecoverable block: its refcount, error, queue entries and local copy.

        The local copy vanishes from lookups before this returns; its file is unlinked
        in the background.
        """
        h = _as_hash(hash)
        self.db.purge(h)
        removed = self._detach_all_copies(h)
        if self.store.locks.locked(h):
            # A write or move of this block is under way: remove what it leaves, too.
            self._spawn_background(f"purge of {h.short()}", self._purge_files_locked, h)
        log.warning("purged block %s (%d local copies removed)", h.hex(), removed)
        return Completed(removed)

    def _detach_all_copies(self, h: Hash) -> int:
        removed = 0
        for root in self.store.layout.candidate_dirs(h):
            for header in (BlockHeader.COMPRESSED, BlockHeader.PLAIN):
                loc = BlockLocation(h, block_path(root, h, header), header, 0, 0)
                trash = self.store.detach_now(loc)
                if trash is not None:
                    removed += 1
                    self._spawn_background(
                        f"unlink of purged {h.short()}", self.store.discard, trash
                    )
        return removed

    async def _purge_files_locked(self, h: Hash) -> None:
        async with self.store.locks.hold(h):
            self._detach_all_copies(h)

    def set_resync_workers(self, n: int) -> Completed:
        """Run ``n`` (1..8) resync workers from now on; persisted across restarts."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
            raise ValueError(f"resync workers must be 1..8, got {n!r}")
        self.db.set_setting("resync_workers", n)
        self.resync.n_workers = n
        self._spawn_resync_workers()
        self._notify_resync()
        return Completed(n)

    def set_resync_tranquility(self, tranquility: int) -> Completed:
        """Sleep ``tranquility`` × the mean step time between resync steps; persisted."""
        if isinstance(tranquility, bool) or not isinstance(tranquility, int) or tranquility < 0:
            raise ValueError(f"tranquility must be a non-negative integer, got {tranquility!r}")
        self.db.set_setting("resync_tranquility", tranquility)
        self.resync.tranquility = tranquility
        return Completed(tranquility)

    def workers(self) -> list[WorkerInfo]:
        """Name, state, queue length, errors, tranquility and progress of each worker."""
        return [w.info() for w in self._workers]

    # ---------------------------------------------------------------------------------------
    # Resync (called by the resync workers)

    async def _block_status(self, hash: Hash) -> tuple[BlockLocation | None, Any]:
        loc = await self.store.find(hash)
        return loc, self.db.get_rc(hash)

    async def resync_block(self, hash: Hash) -> int | None:
        """Bring one block in order (see ``_core/resync.py``); return a time to look again."""
        async with self.store.locks.hold(hash):
            loc, rc = await self._block_status(hash)
        now = self.clock.now_msec()
        decision = decide_resync(
            exists=loc is not None,
            rc=rc,
            now_msec=now,
            is_storage_node=self._is_storage_node(hash),
            written_at_msec=loc.written_at_msec if loc is not None else None,
            gc_delay_msec=self.config.gc_delay_msec,
        )
        action = decision.action
        if action is ResyncAction.NOTHING:
            return None
        if action is ResyncAction.DEFER:
            return decision.retry_at
        if action is ResyncAction.CLEAR_RC:
            await run_blocking(self.db.clear_deleted_rc_sync, hash, now, limiter=self.db_limiter)
            return None
        if action is ResyncAction.FETCH:
            await self._fetch_missing(hash)
            return None
        return await self._offload_and_delete(hash)

    async def _fetch_missing(self, hash: Hash) -> None:
        log.info("resync %s: referenced but absent, fetching from peers", hash.short())
        peers = self._peers_for_read(hash)
        if not peers or self.rpc is None:
            raise MissingBlockError(
                hash, f"block {hash.hex()} is referenced but absent and no peer can provide it"
            )
        _plaintext, block = await self._read_from_peers(hash, peers, background=True)
        if self._level is not None and block.header is BlockHeader.PLAIN:
            block = (
                await run_blocking(
                    hash_and_encode, _plaintext, self._level, limiter=self.cpu_limiter
                )
            )[1]
        await self._write_local(hash, block)
        self.metrics.resync_received += 1

    async def _offload_and_delete(self, hash: Hash) -> int | None:
        storage = self.layout.storage_nodes(hash)
        if not offload_allowed(len(storage), self.layout.write_quorum):
            raise TrioblockError(
                f"not offloading {hash.hex()}: {len(storage)} storage nodes known, "
                f"write quorum is {self.layout.write_quorum}"
            )
        others = [n for n in storage if n != self.node_id]
        if others:
            await self._offload(hash, others)
        async with self.store.locks.hold(hash):
            loc = await self.store.find(hash)
            if loc is None:
                return None
            # From here to the rename nothing awaits: an incref cannot slip in between.
            rc = self.db.get_rc(hash)
            now = self.clock.now_msec()
            recheck = decide_resync(
                exists=True,
                rc=rc,
                now_msec=now,
                is_storage_node=self._is_storage_node(hash),
                written_at_msec=loc.written_at_msec,
                gc_delay_msec=self.config.gc_delay_msec,
            )
            if recheck.action is ResyncAction.DEFER:
                return recheck.retry_at
            if recheck.action is not ResyncAction.OFFLOAD_AND_DELETE:
                return None
            trash = self.store.detach_now(loc)
            if trash is None:
                return None
            await self.store.discard(trash)
        self.metrics.deletes += 1
        await run_blocking(self.db.clear_deleted_rc_sync, hash, now, limiter=self.db_limiter)
        log.info("deleted unreferenced block %s", hash.short())
        return None

    async def _offload(self, hash: Hash, others: list[str]) -> None:
        if self.rpc is None:
            raise TransportError("no transport configured to reach the other storage nodes")
        rpc = self.rpc
        needs: dict[str, bool] = {}

        async def ask(node: str) -> None:
            with trio.fail_after(self.config.need_block_query_timeout):
                needs[node] = await rpc.need_block(node, hash, background=True)

        async with trio.open_nursery() as nursery:
            for node in others:
                nursery.start_soon(ask, node)
        needing = [n for n, needed in needs.items() if needed]
        if not needing:
            return
        async with self.store.locks.hold(hash):
            found = await self.store.read_verified(hash)
        if found is None:
            return
        _plaintext, block, _loc = found
        async with self.budget.hold(len(block) * len(needing)), trio.open_nursery() as nursery:
            for node in needing:
                nursery.start_soon(self._send_one, node, hash, block, True)
        self.metrics.resync_sent += len(needing)
        log.info("offloaded %s to %s before deleting", hash.short(), ", ".join(needing))

    # ---------------------------------------------------------------------------------------
    # RPC handler (requests from peers)

    async def serve_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        """A peer's ``GetBlock``: the verified local copy, encoded as stored."""
        local = await self._read_local(hash)
        if local is None:
            raise MissingBlockError(hash)
        return local[1]

    async def serve_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        """A peer's ``PutBlock``: receive within the byte budget, verify, then store."""
        chunks: list[bytes] = []
        size = 0
        taken = 0
        try:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                wanted = min(size, self.budget.capacity) - taken
                if wanted > 0:
                    # Bounded wait: two large receives must not hold half the budget each
                    # and wait for each other forever.
                    try:
                        with trio.fail_after(self.config.rpc_timeout):
                            taken += await self.budget.acquire(wanted)
                    except trio.TooSlowError:
                        raise TransportError(
                            f"{self.node_id}: receive buffer full (ram_buffer_max) for "
                            f"{self.config.rpc_timeout}s; try again later"
                        ) from None
            block = DataBlock(header, b"".join(chunks))
            chunks.clear()
            # Verify before anything touches the disk: a peer never makes us store
            # bytes that do not match their name.
            await run_blocking(
                lambda: decode_block(hash, block, max_size=self.config.max_block_size),
                limiter=self.cpu_limiter,
            )
            await self._write_local(hash, block)
        finally:
            self.budget.release(taken)

    async def serve_need_block(self, hash: Hash) -> bool:
        """A peer's ``NeedBlockQuery``: referenced here and no local copy?"""
        async with self.store.locks.hold(hash):
            loc, rc = await self._block_status(hash)
        return rc.is_nonzero and loc is None

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    def _spawn_resync_workers(self) -> None:
        """Start resync workers up to the configured count (extra ones stop themselves)."""
        running = {w.index for w in self._workers if isinstance(w, ResyncWorker)}
        for index in range(self.resync.n_workers):
            if index not in running:
                self.add_worker(ResyncWorker(index, self, self.resync))

    def add_worker(self, worker: Worker) -> None:
        """Run a background worker in the node's nursery until it is done or the node stops."""
        nursery = self._require_open()
        self._workers.append(worker)
        nursery.start_soon(self._run_worker, worker)

    async def _run_worker(self, worker: Worker) -> None:
        self._running_workers += 1
        try:
            await run_worker(worker, self._stopping, self.clock.now_msec)
        finally:
            self._running_workers -= 1
            self._workers.remove(worker)
            if self._running_workers == 0:
                self._workers_stopped.set()

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        removed = await run_blocking(self.store.cleanup_temps_sync, limiter=self.cpu_limiter)
        if removed:
            log.info("removed %d stale temp files left by an earlier crash", removed)
        if self.rpc is not None:
            await nursery.start(self.rpc.serve, RpcEndpoint(self))
        self._spawn_resync_workers()
        self._start_operations()

    async def _stop(self) -> None:
        """Let every worker finish its current unit, then stop the RPC layer."""
        self._stopping.set()
        if self._running_workers:
            await self._workers_stopped.wait()
        if self.rpc is not None:
            with trio.CancelScope(shield=True):
                await self.rpc.aclose()


@asynccontextmanager
async def open_block_manager(
    config: Config,
    *,
    layout: Layout | None = None,
    transport: Transport | None = None,
) -> AsyncIterator[BlockManager]:
    """Open a node: database, data directories, RPC server and background workers.

    ``layout=None`` means a single node that stores every block itself;
    ``transport=None`` means no network. Leaving the context stops the workers between
    units (a durable write in progress completes), stops the server and closes the
    database. Bad configuration raises ``ConfigError`` naming the field.
    """
    config.validate()
    if layout is None:
        layout = LocalLayout(config.node_id)
    elif config.node_id not in layout.nodes:
        raise ConfigError("node_id", f"{config.node_id!r} is not a node of the layout {layout!r}")
    if transport is not None and config.rpc_secret is None:
        raise ConfigError("rpc_secret", "a network transport requires a cluster secret")
    if len(layout.nodes) > 1 and transport is None:
        log.warning("%s: layout has peers but no transport: peers are unreachable", config.node_id)

    clock = NodeClock()
    db = await run_blocking(MetadataDb, config.metadata_path)
    try:
        data_layout = await run_blocking(_load_data_layout, db, config)
        store = BlockStore(
            data_layout,
            compression=config.compression_level is not None,
            fsync=config.data_fsync,
            limiter=trio.CapacityLimiter(config.disk_threads),
            max_block_size=config.max_block_size,
        )
        markers = db.get_setting("data_dir_markers", {})
        new_markers = await run_blocking(store.prepare_dirs_sync, markers, config.node_id)
        if new_markers != markers:
            db.set_setting("data_dir_markers", new_markers)
        rpc = None
        if transport is not None:
            assert config.rpc_secret is not None
            rpc = RpcNode(
                config.node_id,
                transport,
                config.rpc_secret,
                timeout=config.rpc_timeout,
                max_body_size=config.max_block_size + (1 << 20),
            )
        bm = BlockManager(config, layout=layout, db=db, store=store, clock=clock, rpc=rpc)
        async with service_nursery(f"node {config.node_id}") as nursery:
            await bm._start(nursery)
            log.info(
                "node %s open: %d data dir(s), compression %s, %d resync worker(s)",
                config.node_id,
                len(data_layout.dirs),
                config.compression_level,
                bm.resync.n_workers,
            )
            try:
                yield bm
            finally:
                with trio.move_on_after(SHUTDOWN_GRACE) as grace:
                    grace.shield = True
                    await bm._stop()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await run_blocking(db.close)
        log.info("node %s closed", config.node_id)


def _load_data_layout(db: MetadataDb, config: Config) -> DataLayout:
    """The stored partition assignment, updated for the configured directories."""
    stored = db.get_setting("data_layout")
    dirs = config.data_dirs
    layout = DataLayout.initial(dirs) if stored is None else DataLayout.decode(stored).update(dirs)
    encoded = layout.encode()
    if encoded != stored:
        db.set_setting("data_layout", encoded)
    return layout


__all__ = ["BlockManager", "Completed", "open_block_manager"]
