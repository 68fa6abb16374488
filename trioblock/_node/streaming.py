"""Verified streaming of a block's plaintext (``BlockManager.stream_block``).

The encoded bytes (a local file or a peer's body) are decoded chunk by chunk in worker
threads. One decoded chunk is always held back: the last chunk is handed out only after
the whole block has hashed to its name, so a consumer of a corrupt block gets
``CorruptBlockError`` before it has seen all of it. A corrupt local copy is quarantined
and queued for repair, as on any read; a corrupt copy from a peer is reported to it
(``on_corrupt``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from .._core.block import BlockDecoder, BlockHeader
from .._core.hashing import Hash
from .._storage import BlockLocation, run_blocking
from ..errors import CorruptBlockError
from .context import PeerContext


class VerifiedChunks:
    """Async iterator of a block's verified plaintext chunks."""

    def __init__(
        self,
        node: PeerContext,
        hash: Hash,
        header: BlockHeader,
        encoded: AsyncIterator[bytes],
        local: BlockLocation | None,
        *,
        on_corrupt: Callable[[], None] | None = None,
    ) -> None:
        self._node = node
        self._hash = hash
        self._encoded = encoded
        self._local = local
        self._on_corrupt = on_corrupt
        self._decoder = BlockDecoder(hash, header, max_size=node.config.max_block_size)
        self._held: bytes | None = None
        self._verified = False

    def __aiter__(self) -> VerifiedChunks:
        return self

    async def _corrupt(self) -> None:
        node = self._node
        if self._on_corrupt is not None:
            self._on_corrupt()
        storage = node.local
        if self._local is not None and storage is not None:
            await storage.corrupt_copy_found(self._hash, self._local)
        else:
            node.metrics.corruptions += 1  # a peer's copy: reported by ``on_corrupt``

    async def __anext__(self) -> bytes:
        node = self._node
        while not self._verified:
            try:
                chunk = await self._encoded.__anext__()
            except StopAsyncIteration:
                try:
                    self._decoder.finish()
                except CorruptBlockError:
                    await self._corrupt()
                    raise
                self._verified = True
                break
            node.metrics.bytes_read += len(chunk)
            try:
                out = await run_blocking(self._decoder.feed, chunk, limiter=node.cpu_limiter)
            except CorruptBlockError:
                await self._corrupt()
                raise
            if not out:
                continue
            previous, self._held = self._held, out
            if previous is not None:
                return previous
        if self._held is None:
            raise StopAsyncIteration
        last, self._held = self._held, None
        return last
