"""Several blocks from one peer in ``GetBlocks`` requests (the asking side).

:meth:`GetBatches.get_blocks` asks ``peer`` for its stored copy of each hash and gives
one outcome per hash, in order: the block as stored (unverified: the caller verifies),
None when the peer holds no copy, or the error the peer reported for that block.

- Sent as ``GetBlocks`` of up to :data:`~.wire.MAX_GET_BLOCKS` hashes, one after the
  other, each under the request timeout. A reply may answer only the first hashes asked
  (its bodies are bounded); the rest are asked again.
- A failure of an exchange (the peer unreachable, a timeout, a reply of the wrong shape
  or length, an ``Error`` for the whole request) raises: no partial answer.
- A peer that does not know ``GetBlocks`` answers with an ``Error`` of kind
  ``protocol``: it is then asked one ``GetBlock`` per block, and not sent ``GetBlocks``
  again for :data:`BATCH_RETRY_AFTER` seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from .._core.block import DataBlock
from .._core.hashing import Hash
from ..errors import BlockError, MissingBlockError, ProtocolError, RequestFailed, TrioblockError
from .body import BodyReader
from .client_base import unexpected_reply
from .errormap import remote_error
from .messages import (
    MAX_GET_BLOCKS,
    Error,
    GetBlocks,
    GetBlocksReply,
    GotBlock,
    checked,
)
from .pool import Connection, ConnectionPool

__all__ = ["BATCH_RETRY_AFTER", "GetBatches", "GetOutcome"]

#: Seconds before ``GetBlocks`` is tried again on a peer that did not know it.
BATCH_RETRY_AFTER: Final = 600.0

#: One block's outcome: the block as stored, None (no copy there), or its error.
GetOutcome = DataBlock | None | TrioblockError

GetOne = Callable[[str, Hash, bool], Awaitable[DataBlock]]


class _Unsupported(Exception):
    """The peer answered ``GetBlocks`` with a ``protocol`` error: it does not know it."""


class GetBatches:
    """The ``GetBlocks`` requests of one client (see the module docstring)."""

    def __init__(self, pool: ConnectionPool, get_one: GetOne) -> None:
        self._pool = pool
        self._get_one = get_one
        #: peer → when (Trio time) it was found not to know ``GetBlocks``
        self._no_batch: dict[str, float] = {}
        #: ``GetBlocks`` requests answered, and the results they carried (for tests)
        self.batches_sent = 0
        self.results_received = 0

    def _batches_to(self, peer: str) -> bool:
        learned = self._no_batch.get(peer)
        return learned is None or trio.current_time() >= learned + BATCH_RETRY_AFTER

    async def get_blocks(
        self, peer: str, hashes: list[Hash], *, background: bool = False
    ) -> list[GetOutcome]:
        """Each block of ``hashes`` as ``peer`` stores it (see the module docstring)."""
        outcomes: list[GetOutcome] = []
        while len(outcomes) < len(hashes):
            rest = hashes[len(outcomes) :]
            if not self._batches_to(peer):
                outcomes.extend(await self._one_by_one(peer, rest, background))
                break
            try:
                outcomes.extend(await self._exchange(peer, rest[:MAX_GET_BLOCKS], background))
            except _Unsupported:
                self._no_batch[peer] = trio.current_time()
        return outcomes

    async def _one_by_one(
        self, peer: str, hashes: list[Hash], background: bool
    ) -> list[GetOutcome]:
        outcomes: list[GetOutcome] = []
        for hash in hashes:
            try:
                outcomes.append(await self._get_one(peer, hash, background))
            except MissingBlockError:
                outcomes.append(None)
            except (BlockError, RequestFailed) as exc:  # that block's answer, not the exchange's
                outcomes.append(exc)
        return outcomes

    async def _exchange(self, peer: str, hashes: list[Hash], background: bool) -> list[GetOutcome]:
        """One ``GetBlocks``: the outcomes of the first hashes (at least one)."""
        request = checked(GetBlocks(hashes))
        timeout = self._pool.timeout

        async def op(conn: Connection) -> tuple[GetBlocksReply, bytes]:
            await conn.channel.send_message(request)
            event = await conn.receive()
            if isinstance(event, Error):
                if event.kind == "protocol":
                    # Our request passed the receiver's own checks before it left: a
                    # protocol complaint means the peer does not know the message.
                    raise _Unsupported(event.message)
                conn.done = True
                raise remote_error(peer, event)
            if not isinstance(event, GetBlocksReply):
                raise unexpected_reply(peer, request, event)
            if len(event.results) > len(hashes):
                raise ProtocolError(
                    f"{peer} answered GetBlocks of {len(hashes)} blocks with "
                    f"{len(event.results)} results"
                )
            body = b""
            if event.announces_body():
                body = await BodyReader(conn.channel, timeout).read_all()
                if len(body) != sum(event.lengths):
                    raise ProtocolError(
                        f"{peer} sent {len(body)} bytes of blocks, not the "
                        f"{sum(event.lengths)} its GetBlocksReply announced"
                    )
            conn.done = True
            return event, body

        reply, body = await self._pool.call(peer, background, None, op)
        self._no_batch.pop(peer, None)
        self.batches_sent += 1
        self.results_received += len(reply.results)
        outcomes: list[GetOutcome] = []
        view = memoryview(body)
        at = 0
        for hash, result in zip(hashes, reply.results, strict=False):
            if isinstance(result, GotBlock):
                outcomes.append(DataBlock(result.header, bytes(view[at : at + result.length])))
                at += result.length
            elif result is None:
                outcomes.append(None)
            else:
                outcomes.append(remote_error(peer, result, hash))
        return outcomes
