"""The client side of the RPC protocol: one method per request.

Rules kept here:

- Each request runs on a connection leased from the :class:`~.pool.ConnectionPool`, under
  one deadline (``timeout``, per call where offered); running out raises
  :class:`~trioblock.errors.TransportError`.
- A reply of the wrong type is a :class:`~trioblock.errors.ProtocolError`; an ``Error``
  reply becomes the exception :mod:`.errormap` names for its kind.
- Blocks received are *not* verified here: the caller verifies.
- What we send is checked as the receiving peer would check it (:func:`.messages.checked`):
  a bad argument is a ``ValueError`` here, never a ``ProtocolError`` on the peer.
- Adding a request: a message class in :mod:`.messages`, a method here (or, for cluster
  references, in :mod:`.client_refs`; most are one ``_request`` call of
  :mod:`.client_base`), a handler method in :mod:`.handler` and a route in
  :mod:`.server`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import outcome
import trio

from .._core.block import BlockHeader, DataBlock
from .._core.hashing import Hash
from ..errors import ProtocolError, TransportError, TrioblockError
from .body import BodyReader
from .client_base import unexpected_reply
from .client_gets import GetBatches, GetOutcome
from .client_puts import PutCoalescer
from .client_refs import RefRequests
from .codec import Event
from .errormap import AdminRequestFailed, remote_error
from .messages import (
    MAX_NEED_BLOCKS,
    Admin,
    AdminReply,
    CorruptReport,
    Error,
    GetBlock,
    LayoutExchange,
    LayoutExchangeReply,
    NeedBlockQuery,
    NeedBlockReply,
    NeedBlocksQuery,
    NeedBlocksReply,
    NodeReportQuery,
    NodeReportReply,
    Ok,
    PutBlock,
    checked,
)
from .pool import Connection, ConnectionPool

__all__ = ["BATCH_RETRY_AFTER", "RpcClient"]

#: Blocks up to this size are sent whole before the reply is awaited; larger ones are
#: streamed while listening for an early reply (a peer refusing the block at once).
SEQUENTIAL_PUT_MAX = 64 * 1024

#: Seconds before a batch request is tried again on a peer that did not know it (the
#: peer may have been upgraded meanwhile); until then its per-block form is used.
BATCH_RETRY_AFTER: Final = 600.0


class _BatchUnsupported(Exception):
    """The peer answered a batch request with a ``protocol`` error: it does not know it."""


class RpcClient(RefRequests):
    """Requests to other nodes, over the connections of ``pool``."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        #: peer → when (Trio time) it was found not to know ``NeedBlocksQuery``
        self._no_batch: dict[str, float] = {}
        #: puts to a peer waiting at the same moment go in one ``PutBlocks``
        self.puts = PutCoalescer(pool, self._put_one)
        #: several blocks from one peer in ``GetBlocks`` requests
        self.gets = GetBatches(pool, self._get_one)

    # -- blocks ------------------------------------------------------------------------

    async def _receive_block_header(self, conn: Connection, hash: Hash) -> BlockHeader:
        event = await conn.receive()
        if isinstance(event, Error):
            conn.done = True
            raise remote_error(conn.peer, event, hash)
        if not isinstance(event, PutBlock):
            raise ProtocolError(f"{conn.peer} answered GetBlock with {type(event).__name__}")
        if event.hash != hash:
            raise ProtocolError(f"{conn.peer} answered GetBlock with another block")
        return event.header

    async def get_block(
        self,
        peer: str,
        hash: Hash,
        order_tag: int | None = None,
        *,
        background: bool = False,
    ) -> DataBlock:
        """Fetch the whole encoded block ``hash`` from ``peer``; the caller verifies it.

        Raises ``MissingBlockError`` / ``CorruptBlockError`` as reported by the peer,
        ``TransportError`` if it cannot be reached or does not answer within the timeout.
        """

        async def op(conn: Connection) -> DataBlock:
            await conn.channel.send_message(GetBlock(hash, order_tag))
            header = await self._receive_block_header(conn, hash)
            payload = await BodyReader(conn.channel, self.timeout).read_all()
            conn.done = True
            return DataBlock(header, payload)

        return await self.pool.call(peer, background, None, op)

    async def _get_one(self, peer: str, hash: Hash, background: bool) -> DataBlock:
        return await self.get_block(peer, hash, background=background)

    async def get_blocks(
        self, peer: str, hashes: list[Hash], *, background: bool = False
    ) -> list[GetOutcome]:
        """Each block of ``hashes`` as ``peer`` stores it, unverified: the block, None
        when the peer holds no copy, or the error it reported for that block; one per
        hash, in order (see :mod:`.client_gets`). A failed exchange raises as
        :meth:`get_block` does; a peer that does not know ``GetBlocks`` is asked one
        ``GetBlock`` per block."""
        return await self.gets.get_blocks(peer, hashes, background=background)

    @asynccontextmanager
    async def stream_block(
        self, peer: str, hash: Hash, order_tag: int | None = None
    ) -> AsyncIterator[tuple[BlockHeader, AsyncIterator[bytes]]]:
        """Fetch block ``hash`` from ``peer`` as ``(header, encoded chunks)``, unverified.

        Entering waits for the peer's answer (within the timeout) and raises as
        :meth:`get_block` does; each chunk must then arrive within the timeout. Leaving
        before the last chunk closes the connection instead of pooling it.
        """

        async def op(conn: Connection) -> BlockHeader:
            await conn.channel.send_message(GetBlock(hash, order_tag))
            return await self._receive_block_header(conn, hash)

        try:
            with trio.fail_after(self.timeout):
                conn, header = await self.pool.lease(peer, False, op)
        except trio.TooSlowError:
            raise TransportError(f"request to {peer} timed out after {self.timeout}s") from None
        body = BodyReader(conn.channel, self.timeout)
        try:
            yield header, body
        finally:
            body.closed = True
            conn.done = body.finished
            await self.pool.release(conn)

    async def put_block(
        self, peer: str, hash: Hash, block: DataBlock, *, background: bool = False
    ) -> None:
        """Send ``block`` to ``peer`` to store under ``hash``; return once it acknowledged.

        Puts to the same peer waiting at the same moment travel together as one
        ``PutBlocks`` (see :mod:`.client_puts`), each with its own outcome; a peer that
        does not know that message gets one ``PutBlock`` per block.
        """
        await self.puts.put(peer, hash, block, background)

    async def put_block_batch(
        self, peer: str, items: list[tuple[Hash, DataBlock]], *, per_exchange: float
    ) -> list[outcome.Outcome[None]]:
        """Send the blocks of ``items`` (one range of :func:`.client_puts.chunks`) to
        ``peer`` as one ``PutBlocks`` (see :meth:`.client_puts.PutCoalescer.send`), the
        exchange within ``per_exchange`` seconds: each block's outcome, in order."""
        return await self.puts.send(peer, items, False, per_exchange)

    async def _put_one(self, peer: str, hash: Hash, block: DataBlock, background: bool) -> None:
        """One ``PutBlock`` exchange. A large body is streamed while the reply is
        awaited, so a peer that rejects the block early (``CorruptBlockError``, …) is
        heard without sending the rest."""

        async def op(conn: Connection) -> None:
            sent = False
            send_error: TransportError | None = None
            reply: Event | None = None
            receive_error: TrioblockError | None = None

            async def send() -> None:
                nonlocal sent, send_error
                try:
                    await conn.channel.send_with_body(PutBlock(hash, block.header), block.payload)
                    sent = True
                except TransportError as exc:
                    send_error = exc

            if len(block.payload) <= SEQUENTIAL_PUT_MAX:
                # The socket takes a small body at once: no early reply to listen for.
                await send()
                try:
                    reply = await conn.receive()
                except TrioblockError as exc:
                    receive_error = exc
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    try:
                        reply = await conn.receive()
                    except TrioblockError as exc:
                        receive_error = exc
                    # An early reply (or a failure) ends the exchange: stop sending the body.
                    nursery.cancel_scope.cancel()
            if reply is None:
                assert receive_error is not None
                if send_error is not None and isinstance(receive_error, TransportError):
                    raise send_error from receive_error
                raise receive_error
            if isinstance(reply, Ok):
                if not sent:
                    raise ProtocolError(f"{peer} acknowledged a block before receiving it")
                conn.done = True
                return
            if isinstance(reply, Error):
                conn.done = sent
                raise remote_error(peer, reply, hash)
            raise ProtocolError(f"{peer} answered PutBlock with {type(reply).__name__}")

        await self.pool.call(peer, background, None, op)

    async def need_block(
        self,
        peer: str,
        hash: Hash,
        *,
        background: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> bool:
        """Ask ``peer`` whether it needs block ``hash``; ``timeout`` overrides the default."""
        reply = await self._request(
            peer,
            NeedBlockQuery(hash),
            NeedBlockReply,
            background=background,
            timeout=timeout,
            hash=hash,
        )
        return reply.needed

    async def need_blocks(
        self,
        peer: str,
        hashes: Iterable[Hash],
        *,
        background: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> list[bool]:
        """Ask ``peer`` whether it needs each block of ``hashes``; one answer per hash.

        Sent as ``NeedBlocksQuery`` messages of up to ``MAX_NEED_BLOCKS`` hashes each,
        one after the other, each under ``timeout`` (or the default). A peer that does
        not know that message (it answers with a ``protocol`` error) is asked one
        ``NeedBlockQuery`` per block instead, and is not sent the batch form again for
        :data:`BATCH_RETRY_AFTER` seconds. A reply of the wrong length is a
        ``ProtocolError``; any failure raises (no partial answer).
        """
        hashes = list(hashes)
        answers: list[bool] = []
        for start in range(0, len(hashes), MAX_NEED_BLOCKS):
            chunk = hashes[start : start + MAX_NEED_BLOCKS]
            answers.extend(
                await self._need_blocks_chunk(peer, chunk, background=background, timeout=timeout)
            )
        return answers

    async def _need_blocks_chunk(
        self,
        peer: str,
        hashes: list[Hash],
        *,
        background: bool,
        timeout: float | None,  # noqa: ASYNC109
    ) -> list[bool]:
        learned = self._no_batch.get(peer)
        if learned is not None and trio.current_time() < learned + BATCH_RETRY_AFTER:
            return await self._need_blocks_one_by_one(peer, hashes, background, timeout)
        request = checked(NeedBlocksQuery(hashes))

        async def op(conn: Connection) -> NeedBlocksReply:
            await conn.channel.send_message(request)
            event = await conn.receive()
            if isinstance(event, NeedBlocksReply):
                conn.done = True
                return event
            if isinstance(event, Error):
                if event.kind == "protocol":
                    # Our request passed the receiver's own checks before it left: a
                    # protocol complaint means the peer does not know the message.
                    # (It closes the connection after saying so.)
                    raise _BatchUnsupported(event.message)
                conn.done = True
                raise remote_error(peer, event)
            raise unexpected_reply(peer, request, event)

        try:
            reply = await self.pool.call(peer, background, timeout, op)
        except _BatchUnsupported:
            self._no_batch[peer] = trio.current_time()
            return await self._need_blocks_one_by_one(peer, hashes, background, timeout)
        self._no_batch.pop(peer, None)
        if len(reply.needed) != len(hashes):
            raise ProtocolError(
                f"{peer} answered NeedBlocksQuery of {len(hashes)} blocks with "
                f"{len(reply.needed)} answers"
            )
        return reply.needed

    async def _need_blocks_one_by_one(
        self,
        peer: str,
        hashes: list[Hash],
        background: bool,
        timeout: float | None,  # noqa: ASYNC109
    ) -> list[bool]:
        return [
            await self.need_block(peer, hash, background=background, timeout=timeout)
            for hash in hashes
        ]

    async def report_corrupt(
        self,
        peer: str,
        hash: Hash,
        *,
        background: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> None:
        """Tell ``peer`` that the copy of ``hash`` it served failed verification here.

        The peer verifies its own copy and quarantines it if it is corrupt.
        """
        await self._request(
            peer, CorruptReport(hash), Ok, background=background, timeout=timeout, hash=hash
        )

    # -- the cluster layout ------------------------------------------------------------

    async def layout_exchange(
        self,
        peer: str,
        digest: bytes,
        history: bytes | None = None,
        *,
        addresses: dict[str, str] | None = None,
        background: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> tuple[bytes, bytes | None, dict[str, str]]:
        """Compare layout histories with ``peer`` (``LayoutExchange``), sending ours
        when ``history`` is given and the ``addresses`` we know; return the peer's digest
        after it merged, its encoded history when that differs from ``digest``, and the
        addresses it knows."""
        request = checked(
            LayoutExchange(digest, with_body=history is not None, addresses=addresses or {})
        )

        async def op(conn: Connection) -> tuple[bytes, bytes | None, dict[str, str]]:
            channel = conn.channel
            if history is None:
                await channel.send_message(request)
            else:
                await channel.send_with_body(request, history)
            event = await conn.receive()
            if isinstance(event, Error):
                conn.done = event.kind != "protocol"
                raise remote_error(peer, event)
            if not isinstance(event, LayoutExchangeReply):
                raise unexpected_reply(peer, request, event)
            body = None
            if event.with_body:
                body = await BodyReader(channel, self.timeout).read_all()
            conn.done = True
            return event.digest, body, event.addresses

        return await self.pool.call(peer, background, timeout, op)

    # -- operator requests -------------------------------------------------------------

    async def admin(
        self,
        peer: str,
        request: dict[str, Any],
        body: bytes | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> dict[str, Any]:
        """Send an operator request (and its ``body``, if any) and return the reply map.

        A body the node sends back is read and dropped; use :meth:`admin_with_body` to
        get it. An error reply raises :class:`AdminRequestFailed` (``AuthenticationError``
        / ``ProtocolError`` for the ``auth`` / ``protocol`` kinds).
        """
        reply, _body = await self.admin_with_body(peer, request, body, timeout=timeout)
        return reply

    async def admin_with_body(
        self,
        peer: str,
        request: dict[str, Any],
        body: bytes | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> tuple[dict[str, Any], bytes | None]:
        """Like :meth:`admin`, returning ``(reply map, reply body or None)``.

        The whole exchange, both bodies included, runs under one deadline: ``timeout``,
        or the node's default.
        """

        def failed(error: Error) -> TrioblockError:
            return remote_error(peer, error, failed=AdminRequestFailed)

        async def op(conn: Connection) -> tuple[dict[str, Any], bytes | None]:
            channel = conn.channel
            if body is None:
                await channel.send_message(Admin(request))
            else:
                try:
                    await channel.send_with_body(Admin(request, with_body=True), body)
                except TransportError as exc:
                    # The node may have refused the body (too large…) and said why
                    # before closing: prefer its reason to a bare broken pipe.
                    with trio.move_on_after(1.0):
                        event = await channel.receive_event()
                        if isinstance(event, Error):
                            raise failed(event) from exc
                    raise
            event = await conn.receive()
            if isinstance(event, Error):
                conn.done = True
                raise failed(event)
            if not isinstance(event, AdminReply):
                raise ProtocolError(f"{peer} answered Admin with {type(event).__name__}")
            reply_body = None
            if event.with_body:
                reply_body = await BodyReader(channel, self.timeout).read_all()
            conn.done = True
            return event.reply, reply_body

        return await self.pool.call(peer, False, timeout, op)

    async def node_report(
        self,
        peer: str,
        what: str,
        hash: Hash | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> dict[str, Any]:
        """``peer``'s operator report ``what`` (``"block"`` about ``hash``, or
        ``"stats"``): a map of plain data, for the caller to check."""
        reply = await self._request(
            peer,
            checked(NodeReportQuery(what, hash)),
            NodeReportReply,
            background=False,
            timeout=timeout,
        )
        return reply.report
