"""Reads: the local copy, hedged peer reads, read repair and streaming.

How a get travels: the local copy, read and verified in a worker thread
(``BlockStore.read_verified``; a corrupt copy is quarantined and queued for resync) →
peers in the layout's read order (``RpcNode.get_block``), each copy verified in a worker
thread (peers send their stored bytes undecoded: this is the one verification of a
transfer; a copy that fails it is reported to its sender, which checks and quarantines
it), with a second request started early when the first is slow (the hedge
threshold of ``HedgePolicy``) → when this node should have held the block (a storage
node with a reference), the verified copy is written back locally in the background
(read repair).

``stream_block`` tries the same sources in the same order, through
``VerifiedChunks`` (``streaming.py``): when a source fails before the consumer received
anything (local copy missing, quarantined meanwhile, corrupt, a peer unreachable), the
next source takes over; once chunks were delivered a failure is raised.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from .._core.block import BlockHeader, DataBlock, decode_block, hash_and_encode
from .._core.hashing import Hash
from .._storage import run_blocking
from ..errors import CorruptBlockError, MissingBlockError, TrioblockError
from .context import PeerContext
from .streaming import VerifiedChunks
from .writes import Writer

log = logging.getLogger("trioblock.node")

#: A source of a stream that failed before delivering anything is skipped for these.
_STREAM_FALLBACK_ERRORS = (TrioblockError, OSError, trio.TooSlowError)


def not_found(hash: Hash, failures: dict[str, BaseException]) -> TrioblockError:
    if failures and all(isinstance(e, CorruptBlockError) for e in failures.values()):
        return CorruptBlockError(hash, f"every copy of {hash.hex()} found was corrupt")
    return MissingBlockError(
        hash,
        f"block {hash.hex()} not found: "
        + "; ".join(f"{n}: {e!r}" for n, e in sorted(failures.items())),
    )


def after_local_failure(
    hash: Hash, exc: TrioblockError, local: BaseException | None
) -> TrioblockError:
    """What a get raises when the peers failed with ``exc`` after the local copy failed
    with ``local`` (None: there was no local copy, or it was fine)."""
    if not isinstance(exc, MissingBlockError) or local is None:
        return exc
    if isinstance(local, CorruptBlockError):
        return local
    return MissingBlockError(
        hash,
        f"block {hash.hex()}: the local copy cannot be read ({local}) "
        "and no other node returned a valid copy",
    )


class Reader:
    """Verified reads of one node: local, from peers, streamed."""

    def __init__(self, ctx: PeerContext, writer: Writer) -> None:
        self._ctx = ctx
        self._writer = writer
        #: this node's storage (None on a gateway: reads go to the peers only)
        self._local = ctx.local

    # -- local ------------------------------------------------------------------------------

    async def read_local(self, hash: Hash) -> tuple[bytes, DataBlock] | None:
        """Verified local copy, or None; a corrupt copy is quarantined and queued."""
        ctx = self._local
        if ctx is None:
            return None
        started = trio.current_time()
        try:
            found = await ctx.store.read_verified(hash)
        except CorruptBlockError:
            await ctx.corrupt_copy_found(hash)  # (quarantined by the store)
            raise
        if found is None:
            return None
        plaintext, block, _loc = found
        ctx.metrics.read_duration.observe(trio.current_time() - started)
        ctx.metrics.bytes_read += len(block)
        return plaintext, block

    async def local_read_failed(self, hash: Hash, exc: OSError) -> None:
        """Count a local copy the disk could not read and queue it for resync."""
        ctx = self._local
        if ctx is None:
            return
        ctx.metrics.read_errors += 1
        log.warning("%s: cannot read the copy of %s: %s", ctx.node_id, hash.short(), exc)
        await ctx.put_to_resync(hash, 0)

    async def local_block_path(self, hash: Hash) -> Path | None:
        if self._local is None:
            return None
        loc = await self._local.store.find(hash)
        return None if loc is None else loc.path

    # -- peers ------------------------------------------------------------------------------

    async def _fetch_verified(
        self, node: str, hash: Hash, background: bool
    ) -> tuple[bytes, DataBlock]:
        ctx = self._ctx
        assert ctx.rpc is not None
        with trio.fail_after(ctx.config.rpc_timeout):
            block = await ctx.rpc.get_block(node, hash, background=background)
        try:
            plaintext = await run_blocking(
                partial(decode_block, max_size=ctx.config.max_block_size),
                hash,
                block,
                limiter=ctx.cpu_limiter,
            )
        except CorruptBlockError:
            self.report_corrupt(node, hash)
            raise
        return plaintext, block

    def report_corrupt(self, node: str, hash: Hash) -> None:
        """Tell ``node`` in the background that the copy it served us is corrupt.

        Peers serve their stored bytes without decoding them; this report is how a bad
        copy there gets verified, quarantined and repaired.
        """
        ctx = self._ctx
        rpc = ctx.rpc
        if rpc is None:
            return

        async def report() -> None:
            await rpc.report_corrupt(node, hash, timeout=ctx.config.rpc_timeout)

        ctx.spawn_background(f"reporting corrupt {hash.short()} to {node}", report)

    async def read_from_peers(
        self, hash: Hash, peers: list[str], *, background: bool = False
    ) -> tuple[bytes, DataBlock]:
        """First valid copy from ``peers``, hedging when the current request is slow."""
        ctx = self._ctx
        if not peers or ctx.rpc is None:
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
                            ctx.metrics.corruptions += 1
                        log.debug("get %s from %s failed: %r", hash.short(), node, exc)
                    else:
                        ctx.hedge.observe(trio.current_time() - started)
                        if not result:
                            result.append(got)
                        nursery.cancel_scope.cancel()
                    finally:
                        attempt_done.set()

                nursery.start_soon(attempt)
                if index + 1 < len(peers):
                    with trio.move_on_after(ctx.hedge.threshold()) as waited:
                        await attempt_done.wait()
                    if waited.cancelled_caught:
                        ctx.metrics.hedged_reads += 1
        if result:
            return result[0]
        raise not_found(hash, failures)

    async def fetch_and_store(self, hash: Hash) -> None:
        """Fetch a verified copy from the peers and write it here (resync, read repair).

        A plain copy is compressed first when this node compresses.
        """
        ctx = self._ctx
        plaintext, block = await self.read_from_peers(
            hash, ctx.peers_for_read(hash), background=True
        )
        level = ctx.config.compression_level
        if level is not None and block.header is BlockHeader.PLAIN:
            block = (
                await run_blocking(hash_and_encode, plaintext, level, limiter=ctx.cpu_limiter)
            )[1]
        await self._writer.write_local(hash, block)

    def _should_hold(self, hash: Hash) -> bool:
        ctx = self._local
        return ctx is not None and ctx.is_storage_node(hash) and ctx.db.get_rc(hash).is_nonzero

    def repair_later(self, hash: Hash, block: DataBlock) -> None:
        """Keep ``block`` (verified, from a peer) here in the background when this node
        should have held it (read repair)."""
        if self._should_hold(hash):
            self._ctx.spawn_background(
                f"read repair of {hash.short()}", self._writer.write_local, hash, block
            )

    # -- get ----------------------------------------------------------------------------------

    async def get_block(self, hash: Hash) -> bytes:
        ctx = self._ctx
        ctx.metrics.gets += 1
        local_corrupt: CorruptBlockError | None = None
        local_error: OSError | None = None
        try:
            local = await self.read_local(hash)
        except CorruptBlockError as exc:
            local_corrupt, local = exc, None
        except OSError as exc:
            # The disk failed the read (EIO...): a failed source, like a peer that
            # cannot answer. The peers are asked, and the resync looks at the copy.
            local_error, local = exc, None
            await self.local_read_failed(hash, exc)
        if local is not None:
            return local[0]
        try:
            plaintext, block = await self.read_from_peers(hash, ctx.peers_for_read(hash))
        except MissingBlockError as exc:
            raised = after_local_failure(hash, exc, local_corrupt or local_error)
            if raised is exc:
                raise
            raise raised from (None if raised is local_corrupt else local_error)
        # We should have had it: keep the verified copy we just received.
        self.repair_later(hash, block)
        return plaintext

    # -- stream -------------------------------------------------------------------------------

    @asynccontextmanager
    async def stream_block(self, hash: Hash) -> AsyncIterator[AsyncIterator[bytes]]:
        self._ctx.metrics.gets += 1
        async with AsyncExitStack() as stack:
            chunks = _FallbackChunks(self, hash, stack)
            await chunks.open()
            yield chunks

    async def _open_local(self, hash: Hash, stack: AsyncExitStack) -> VerifiedChunks | None:
        ctx = self._local
        if ctx is None:
            return None
        loc = await ctx.store.find(hash)
        if loc is None:
            return None
        # The copy may be quarantined or deleted between the lookup and the open.
        encoded = await stack.enter_async_context(ctx.store.open_stream(loc))
        return VerifiedChunks(ctx, hash, loc.header, encoded, loc)

    async def _open_peer(self, node: str, hash: Hash, stack: AsyncExitStack) -> VerifiedChunks:
        ctx = self._ctx
        assert ctx.rpc is not None
        attempt = AsyncExitStack()
        try:
            with trio.fail_after(ctx.config.rpc_timeout):
                header, body = await attempt.enter_async_context(ctx.rpc.stream_block(node, hash))
        except BaseException:
            await attempt.aclose()
            raise
        await stack.enter_async_context(attempt)
        return VerifiedChunks(
            ctx, hash, header, body, None, on_corrupt=lambda: self.report_corrupt(node, hash)
        )

    def _streamed_from_peer(self, hash: Hash) -> None:
        if self._should_hold(hash):
            ctx = self._ctx
            ctx.spawn_background(f"read repair of {hash.short()}", self.fetch_and_store, hash)


class _FallbackChunks:
    """The plaintext chunks of the first source that works: local copy, then peers."""

    def __init__(self, reader: Reader, hash: Hash, stack: AsyncExitStack) -> None:
        ctx = reader._ctx
        self._reader = reader
        self._hash = hash
        self._stack = stack
        self._sources = ["local"]
        if ctx.rpc is not None:
            self._sources += ctx.peers_for_read(hash)
        self._current: VerifiedChunks | None = None
        self._source = ""
        self._delivered = False
        self._failures: dict[str, BaseException] = {}

    def __aiter__(self) -> _FallbackChunks:
        return self

    async def open(self) -> None:
        """Open the first source that answers (``MissingBlockError`` if none does)."""
        self._current = await self._next_source()

    async def _next_source(self) -> VerifiedChunks:
        reader, hash = self._reader, self._hash
        while self._sources:
            self._source = source = self._sources.pop(0)
            try:
                if source == "local":
                    chunks = await reader._open_local(hash, self._stack)
                    if chunks is None:
                        continue
                    return chunks
                return await reader._open_peer(source, hash, self._stack)
            except _STREAM_FALLBACK_ERRORS as exc:
                self._failures[source] = exc
                log.debug("stream %s from %s failed: %r", hash.short(), source, exc)
        raise not_found(hash, self._failures)

    async def __anext__(self) -> bytes:
        while True:
            if self._current is None:
                self._current = await self._next_source()
            try:
                chunk = await self._current.__anext__()
            except StopAsyncIteration:
                if self._source != "local":
                    self._reader._streamed_from_peer(self._hash)
                raise
            except _STREAM_FALLBACK_ERRORS as exc:
                if self._delivered:
                    raise
                self._failures[self._source] = exc
                self._current = None
                continue
            self._delivered = True
            return chunk


__all__ = ["Reader", "after_local_failure", "not_found"]
