"""Puts bound to one peer, coalesced into ``PutBlocks`` requests.

Each ``RpcClient.put_block`` joins the queue of its peer (and priority: background puts
have a queue of their own). One call at a time leads a queue: it takes what is queued
(up to :data:`~.wire.MAX_PUT_BLOCKS` blocks and :data:`~.wire.MAX_PUT_BLOCKS_BYTES`
bytes, its own among them, in arrival order), sends it as one ``PutBlocks`` (a single
block goes as a plain ``PutBlock``) and hands every caller its block's own outcome.
No timer, no delay: a batch is what queued while the previous send to that peer was
under way, so a lone put is sent at once.

- A leader whose own block is answered leaves; the first call still queued leads the
  next send. So no queued put is left without a leader, and none works for others
  after its own answer.
- Cancellation: a queued put that is cancelled withdraws if no send took it (once taken,
  its caller may leave; the send goes on for the others and a put is idempotent). A
  leader cancelled during its send gives up that exchange (its connection is closed) and
  puts the other blocks it took back in front of the queue for the next leader.
- A failure of the whole exchange (the peer unreachable, a timeout, a reply of the wrong
  shape) fails every block of that batch; a block's own error fails it alone.
- A peer that does not know ``PutBlocks`` answers with an ``Error`` of kind
  ``protocol``: each block of that batch is then sent by its own caller as a
  ``PutBlock``, and so is every put to that peer for :data:`BATCH_RETRY_AFTER` seconds.

A caller with many blocks for one peer at once (``put_blocks``) does without the queue:
:func:`chunks` cuts them into requests of the same bounds and :meth:`PutCoalescer.send`
sends one such request, with the same fallback for a peer that does not know it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import outcome
import trio

from .._core.block import DataBlock
from .._core.hashing import Hash
from ..errors import ProtocolError, TransportError, TrioblockError
from .client_base import unexpected_reply
from .errormap import remote_error
from .messages import (
    MAX_PUT_BLOCKS,
    MAX_PUT_BLOCKS_BYTES,
    Error,
    PutBlocks,
    PutBlocksReply,
    PutEntry,
    checked,
)
from .pool import Connection, ConnectionPool

__all__ = ["BATCH_RETRY_AFTER", "PutCoalescer", "chunks"]

#: Seconds before ``PutBlocks`` is tried again on a peer that did not know it.
BATCH_RETRY_AFTER: Final = 600.0

PutOne = Callable[[str, Hash, DataBlock, bool], Awaitable[None]]


def chunks(sizes: list[int]) -> list[range]:
    """Consecutive ranges of indices of blocks of ``sizes`` (encoded payload bytes): as
    many blocks a request as a ``PutBlocks`` carries (a block over the byte bound alone)."""
    out: list[range] = []
    start = size = 0
    for i, length in enumerate(sizes):
        if i > start and (i - start == MAX_PUT_BLOCKS or size + length > MAX_PUT_BLOCKS_BYTES):
            out.append(range(start, i))
            start, size = i, 0
        size += length
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


class _Unsupported(Exception):
    """The peer answered ``PutBlocks`` with a ``protocol`` error: it does not know it."""


class _SendAlone:
    """The outcome of a put whose batch the peer refused: its caller sends it alone."""


_ALONE: Final = _SendAlone()


class _Put:
    __slots__ = ("block", "hash", "leads", "result", "taken", "wake")

    def __init__(self, hash: Hash, block: DataBlock, *, event: bool = True) -> None:
        self.hash = hash
        self.block = block
        self.result: outcome.Outcome[_SendAlone | None] | None = None
        self.taken = False
        self.leads = False
        if event:
            self.wake = trio.Event()


class _Queue:
    __slots__ = ("led", "puts")

    def __init__(self) -> None:
        self.puts: list[_Put] = []
        self.led = False


class PutCoalescer:
    """The per-peer put queues of one client (see the module docstring)."""

    def __init__(self, pool: ConnectionPool, put_one: PutOne) -> None:
        self._pool = pool
        self._put_one = put_one
        self._queues: dict[tuple[str, bool], _Queue] = {}
        #: peer → when (Trio time) it was found not to know ``PutBlocks``
        self._no_batch: dict[str, float] = {}
        #: ``PutBlocks`` requests sent, and the blocks they carried (for tests and stats)
        self.batches_sent = 0
        self.blocks_batched = 0

    def _batches_to(self, peer: str) -> bool:
        learned = self._no_batch.get(peer)
        return learned is None or trio.current_time() >= learned + BATCH_RETRY_AFTER

    async def put(self, peer: str, hash: Hash, block: DataBlock, background: bool) -> None:
        """Store ``block`` on ``peer``, in one request with the puts queued meanwhile."""
        if not self._batches_to(peer):
            await self._put_one(peer, hash, block, background)
            return
        key = (peer, background)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        put = _Put(hash, block)
        queue.puts.append(put)
        try:
            if not queue.led:
                queue.led = put.leads = True
            else:
                put.wake = trio.Event()
                await put.wake.wait()  # answered, or handed the lead
            while put.result is None:
                await self._send(peer, background, queue)
        finally:
            if put.result is None and not put.taken:
                queue.puts.remove(put)
            if put.leads:
                self._hand_over(key, queue)
        if put.result.unwrap() is _ALONE:
            await self._put_one(peer, hash, block, background)

    async def send(
        self, peer: str, items: list[tuple[Hash, DataBlock]], background: bool, per_exchange: float
    ) -> list[outcome.Outcome[None]]:
        """Store the blocks of one of :func:`chunks`' ranges on ``peer`` in one request
        (one ``PutBlock`` for a single block, or one per block, one after the other, to a
        peer that does not know ``PutBlocks``), each exchange within ``per_exchange``
        seconds; each block's outcome, in order. A failure of the whole exchange is each
        block's; a cancellation is raised."""
        puts = [_Put(h, block, event=False) for h, block in items]
        results: list[outcome.Outcome[_SendAlone | None]]
        if len(puts) > 1 and self._batches_to(peer):
            try:
                with trio.fail_after(per_exchange):
                    results = await self._exchange(peer, background, puts)
            except trio.TooSlowError:
                error = TransportError(f"PutBlocks to {peer} timed out after {per_exchange}s")
                results = [outcome.Error(error) for _ in puts]
        else:
            results = [outcome.Value(_ALONE) for _ in puts]
        out: list[outcome.Outcome[None]] = []
        for put, result in zip(puts, results, strict=True):
            if isinstance(result, outcome.Error):
                out.append(result)
            elif isinstance(result, outcome.Value) and result.value is _ALONE:
                out.append(await self._send_alone(peer, put, background, per_exchange))
            else:
                out.append(outcome.Value(None))
        return out

    async def _send_alone(
        self, peer: str, put: _Put, background: bool, per_exchange: float
    ) -> outcome.Outcome[None]:
        try:
            with trio.fail_after(per_exchange):
                await self._put_one(peer, put.hash, put.block, background)
        except trio.TooSlowError:
            return outcome.Error(
                TransportError(f"PutBlock to {peer} timed out after {per_exchange}s")
            )
        except Exception as exc:
            return outcome.Error(exc)
        return outcome.Value(None)

    def _hand_over(self, key: tuple[str, bool], queue: _Queue) -> None:
        for waiting in queue.puts:
            waiting.leads = True
            waiting.wake.set()
            return
        queue.led = False
        if self._queues.get(key) is queue:
            del self._queues[key]

    async def _send(self, peer: str, background: bool, queue: _Queue) -> None:
        batch: list[_Put] = []
        size = 0
        for put in queue.puts:
            length = len(put.block.payload)
            if batch and (len(batch) == MAX_PUT_BLOCKS or size + length > MAX_PUT_BLOCKS_BYTES):
                break
            batch.append(put)
            size += length
        del queue.puts[: len(batch)]
        for put in batch:
            put.taken = True
        try:
            results = await self._exchange(peer, background, batch)
        except BaseException:
            # Cancelled: this leader gives up the exchange; the blocks go back in front.
            for put in batch:
                put.taken = False
            queue.puts[:0] = batch
            raise
        for put, result in zip(batch, results, strict=True):
            put.result = result
            put.wake.set()

    async def _exchange(
        self, peer: str, background: bool, batch: list[_Put]
    ) -> list[outcome.Outcome[_SendAlone | None]]:
        """Every block's outcome: a failure of the whole exchange is each block's."""
        try:
            if len(batch) == 1:
                put = batch[0]
                await self._put_one(peer, put.hash, put.block, background)
                return [outcome.Value(None)]
            return await self._put_many(peer, background, batch)
        except _Unsupported:
            self._no_batch[peer] = trio.current_time()
            return [outcome.Value(_ALONE) for _ in batch]
        except Exception as exc:
            return [outcome.Error(exc) for _ in batch]

    async def _put_many(
        self, peer: str, background: bool, batch: list[_Put]
    ) -> list[outcome.Outcome[_SendAlone | None]]:
        request = checked(
            PutBlocks([PutEntry(p.hash, p.block.header, len(p.block.payload)) for p in batch])
        )
        payload = b"".join(p.block.payload for p in batch)

        async def op(conn: Connection) -> PutBlocksReply:
            send_error: TransportError | None = None
            try:
                await conn.channel.send_with_body(request, payload)
            except TransportError as exc:
                send_error = exc  # an older peer may have refused the request and closed
            try:
                reply = await conn.receive()
            except TrioblockError:
                if send_error is not None:
                    raise send_error from None
                raise
            if isinstance(reply, Error) and reply.kind == "protocol":
                # Our request passed the receiver's own checks before it left: a protocol
                # complaint means the peer does not know the message.
                raise _Unsupported(reply.message)
            if send_error is not None:
                raise send_error
            if isinstance(reply, PutBlocksReply):
                conn.done = True
                return reply
            if isinstance(reply, Error):
                conn.done = True
                raise remote_error(peer, reply)
            raise unexpected_reply(peer, request, reply)

        reply = await self._pool.call(peer, background, None, op)
        self._no_batch.pop(peer, None)
        if len(reply.results) != len(batch):
            raise ProtocolError(
                f"{peer} answered PutBlocks of {len(batch)} blocks with "
                f"{len(reply.results)} results"
            )
        self.batches_sent += 1
        self.blocks_batched += len(batch)
        return [
            outcome.Value(None)
            if error is None
            else outcome.Error(remote_error(peer, error, p.hash))
            for p, error in zip(batch, reply.results, strict=True)
        ]
