"""The server side of the RPC protocol: authenticate, read requests, call the handler.

Rules kept here:

- Every connection starts with the mutual handshake; the handler is never called for a
  peer that has not proven the cluster secret. A failed proof or a protocol violation
  during the handshake is logged as a warning and counted
  (``RpcStats.handshakes_rejected``); a stall is logged at info and counted; a peer that
  closes during the handshake (a client whose request was cancelled while it connected)
  is only logged at debug.
- Requests on a connection are served one after the other. Each request type has a route
  (:data:`SIMPLE_ROUTES` for the ones answered by one reply message, methods for those
  with bodies): adding a request is one entry here.
- The server never crashes because of a peer: a protocol violation closes that connection
  only (logged at warning, and the peer is told why unless it is gone); a connection lost
  mid-request (the peer died or gave up) is logged at debug and not answered. A
  ``TrioblockError`` from the handler becomes an ``Error`` reply of the matching kind
  (:mod:`.errormap`); any other exception becomes an ``internal`` reply and is logged
  with its traceback. A handler's reply that a peer would refuse (a bad type or size) is
  such a bug too.
- A ``PutBlock`` body reaches the handler as a :class:`~.body.BodyReader` bounded by
  ``max_body_size``; if the handler leaves part of it unread, the server reads the rest
  for a while (so the client gets the reply before the connection closes) and then
  closes the connection instead of reusing it.
- A ``PutBlocks`` body reaches the handler (``rpc_put_blocks``) as :class:`~.body.BodyParts`,
  cut at the announced lengths (a body of another length ends the connection with a
  ``ProtocolError``); the handler returns one outcome per block (None, or the
  exception that failed it), each turned into its result in the ``PutBlocksReply``. A
  handler without ``rpc_put_blocks`` refuses the message as an older peer does (a
  ``protocol`` error): the sender falls back to ``PutBlock``.
- A ``GetBlocks`` is answered by the handler's ``rpc_get_blocks`` (one outcome per
  hash, for the first hashes asked): the blocks as stored, absent or failed, cut where
  the bodies reach 4 MiB; a handler without it refuses the message as an older peer
  does (the asker falls back to ``GetBlock``).
- Admin requests and their replies may each carry one body. The server reads a request
  body whole before calling ``rpc_admin(request, body)``; a handler returns either a reply
  map or ``(map, body)``. Handlers written before bodies existed (``rpc_admin(request)``)
  keep working: they are called with one argument whenever no body was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import Any, Final, TypeVar

import trio

from ..errors import ProtocolError, TransportError, TrioblockError
from .body import BodyParts, BodyReader
from .channel import Channel
from .codec import ConnectionClosed
from .errormap import INTERNAL, error_reply
from .handler import RpcHandler
from .handshake import server_handshake
from .messages import (
    Admin,
    AdminReply,
    BlocksHeldQuery,
    BlocksHeldReply,
    CorruptReport,
    Error,
    GetBlock,
    GetBlocks,
    LayoutExchange,
    LayoutExchangeReply,
    Message,
    NeedBlockQuery,
    NeedBlockReply,
    NeedBlocksQuery,
    NeedBlocksReply,
    NodeReportQuery,
    NodeReportReply,
    Ok,
    OwnedQuery,
    OwnedReply,
    PutBlock,
    PutBlocks,
    PutBlocksReply,
    RefCollect,
    RefDigests,
    RefDigestsReply,
    RefEntries,
    RefFetch,
    RefUpdate,
    RefUpdateReply,
    checked,
)
from .pool import RpcStats
from .reach import Reachability
from .server_gets import get_blocks_reply
from .transport import Transport

__all__ = ["DRAIN_TIMEOUT", "SIMPLE_ROUTES", "RpcServer"]

log = logging.getLogger("trioblock.net")

T = TypeVar("T")

#: Seconds a server keeps reading (and discarding) a body its handler left unread, so the
#: client gets the reply before the connection is closed.
DRAIN_TIMEOUT = 5.0

#: How a request answered by a single message is answered: ``(handler, peer, request)``.
SimpleRoute = Callable[[RpcHandler, str, Any], Awaitable[Message]]


async def _need_block(handler: RpcHandler, peer: str, request: NeedBlockQuery) -> Message:
    return NeedBlockReply(bool(await handler.rpc_need_block(request.hash)))


async def _need_blocks(handler: RpcHandler, peer: str, request: NeedBlocksQuery) -> Message:
    batch = getattr(handler, "rpc_need_blocks", None)
    if batch is None:
        # A handler written before the batch form: ask it block by block.
        needed = [bool(await handler.rpc_need_block(h)) for h in request.hashes]
    else:
        needed = [bool(v) for v in await batch(request.hashes)]
    if len(needed) != len(request.hashes):
        raise ValueError(f"{len(needed)} answers returned for {len(request.hashes)} blocks")
    return NeedBlocksReply(needed)


async def _corrupt_report(handler: RpcHandler, peer: str, request: CorruptReport) -> Message:
    await handler.rpc_corrupt_report(peer, request.hash)
    return Ok()


async def _ref_update(handler: RpcHandler, peer: str, request: RefUpdate) -> Message:
    reporting = getattr(handler, "rpc_ref_update_report", None) if request.report else None
    if reporting is None:
        # Not asked, or a handler written before the report: a plain Ok says nothing.
        await handler.rpc_ref_update(peer, request.entries)
        return Ok()
    missing = [bool(v) for v in await reporting(peer, request.entries)]
    if len(missing) != len(request.entries):
        raise ValueError(f"{len(missing)} flags returned for {len(request.entries)} entries")
    return RefUpdateReply(missing)


async def _blocks_held(handler: RpcHandler, peer: str, request: BlocksHeldQuery) -> Message:
    held = [bool(v) for v in await handler.rpc_blocks_held(request.hashes)]
    if len(held) != len(request.hashes):
        raise ValueError(f"{len(held)} answers returned for {len(request.hashes)} blocks")
    return BlocksHeldReply(held)


async def _owned(handler: RpcHandler, peer: str, request: OwnedQuery) -> Message:
    entries, more = await handler.rpc_owned(request.owner, request.after, request.limit)
    entries = list(entries)
    if len(entries) > request.limit:
        raise ValueError(f"{len(entries)} rows returned, {request.limit} asked")
    return checked(OwnedReply(entries, more))


async def _ref_digests(handler: RpcHandler, peer: str, request: RefDigests) -> Message:
    digests = list(await handler.rpc_ref_digests(peer, request.prefixes))
    if len(digests) != len(request.prefixes):
        raise ValueError(f"{len(digests)} digests returned for {len(request.prefixes)} prefixes")
    return checked(RefDigestsReply(digests))


async def _ref_fetch(handler: RpcHandler, peer: str, request: RefFetch) -> Message:
    entries, more = await handler.rpc_ref_fetch(peer, request.prefix, request.after, request.limit)
    entries = list(entries)
    if len(entries) > request.limit:
        raise ValueError(f"{len(entries)} entries returned, {request.limit} asked")
    return checked(RefEntries(entries, more))


async def _ref_collect(handler: RpcHandler, peer: str, request: RefCollect) -> Message:
    await handler.rpc_ref_collect(peer, request.entries)
    return Ok()


async def _node_report(handler: RpcHandler, peer: str, request: NodeReportQuery) -> Message:
    report = await handler.rpc_node_report(peer, request.what, request.hash)
    return checked(NodeReportReply(report))


#: Requests answered by one reply message and no body: request type → route.
SIMPLE_ROUTES: Final[dict[type[Any], SimpleRoute]] = {
    NeedBlockQuery: _need_block,
    NeedBlocksQuery: _need_blocks,
    CorruptReport: _corrupt_report,
    RefUpdate: _ref_update,
    BlocksHeldQuery: _blocks_held,
    OwnedQuery: _owned,
    RefDigests: _ref_digests,
    RefFetch: _ref_fetch,
    RefCollect: _ref_collect,
    NodeReportQuery: _node_report,
}


class RpcServer:
    """Answers the requests of authenticated peers by calling an :class:`RpcHandler`."""

    def __init__(
        self,
        node_id: str,
        transport: Transport,
        secret: bytes,
        *,
        timeout: float,
        handshake_timeout: float,
        max_body_size: int,
        stats: RpcStats,
        reachability: Reachability | None = None,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.timeout = timeout
        self.handshake_timeout = handshake_timeout
        self.max_body_size = max_body_size
        self.stats = stats
        #: told of every peer that shakes hands with this node
        self.reachability = reachability if reachability is not None else Reachability()
        self._secret = secret

    async def serve(
        self,
        handler: RpcHandler,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer incoming requests with ``handler`` until cancelled (see ``RpcNode.serve``)."""
        await self.transport.serve(partial(self.serve_connection, handler), task_status=task_status)

    async def serve_connection(self, handler: RpcHandler, stream: trio.abc.Stream) -> None:
        """Authenticate one incoming connection and answer its requests until it ends."""
        channel = Channel(stream, max_body_size=self.max_body_size)
        try:
            peer = await self._handshake(channel)
            if peer is None:
                return
            self.stats.connections_accepted += 1
            self.reachability.reached(peer)
            await self._serve_requests(handler, channel, peer)
        except ProtocolError as exc:
            log.warning("%s: protocol error from %s, closing: %s", self.node_id, channel.peer, exc)
            if not channel.codec.sending_body and not channel.codec.at_eof:
                with trio.move_on_after(1.0), suppress(TransportError):
                    await channel.send_message(Error("protocol", str(exc)))
        except TransportError as exc:
            log.debug("%s: connection from %s lost: %s", self.node_id, channel.peer, exc)
        finally:
            await channel.aclose()

    async def _handshake(self, channel: Channel) -> str | None:
        """The authenticated peer's id, or ``None`` (logged) if the handshake failed."""
        try:
            with trio.fail_after(self.handshake_timeout):
                return await server_handshake(channel, node_id=self.node_id, secret=self._secret)
        except trio.TooSlowError:
            self.stats.handshakes_rejected += 1
            log.info(
                "%s: handshake failed, dropping connection: no handshake within %ss",
                self.node_id,
                self.handshake_timeout,
            )
        except TransportError as exc:
            # The peer went away (a request cancelled while it connected): not an attack.
            log.debug("%s: peer left during the handshake: %s", self.node_id, exc)
        except TrioblockError as exc:  # AuthenticationError, ProtocolError
            self.stats.handshakes_rejected += 1
            log.warning("%s: handshake failed, dropping connection: %r", self.node_id, exc)
        return None

    async def _serve_requests(self, handler: RpcHandler, channel: Channel, peer: str) -> None:
        while True:
            request = await channel.receive_event()
            if isinstance(request, ConnectionClosed):
                return
            route = SIMPLE_ROUTES.get(type(request))
            if route is not None:
                what = route.__name__.lstrip("_")
                reply = await self._invoke(channel, what, route, handler, peer, request)
                await channel.send_message(reply)
            elif isinstance(request, GetBlock):
                await self._answer_get(handler, channel, request)
            elif isinstance(request, GetBlocks):
                await self._answer_get_many(handler, channel, request)
            elif isinstance(request, PutBlock):
                if not await self._answer_put(handler, channel, request):
                    return
            elif isinstance(request, PutBlocks):
                if not await self._answer_put_many(handler, channel, request):
                    return
            elif isinstance(request, Admin):
                await self._answer_admin(handler, channel, request)
            elif isinstance(request, LayoutExchange):
                await self._answer_layout(handler, channel, peer, request)
            else:
                raise ProtocolError(f"{peer} sent {type(request).__name__}, which is not a request")

    async def _answer_get(self, handler: RpcHandler, channel: Channel, request: GetBlock) -> None:
        block = await self._invoke(
            channel, "get_block", handler.rpc_get_block, request.hash, request.order_tag
        )
        if isinstance(block, Error):
            await channel.send_message(block)
        else:
            await channel.send_with_body(PutBlock(request.hash, block.header), block.payload)

    async def _answer_get_many(
        self, handler: RpcHandler, channel: Channel, request: GetBlocks
    ) -> None:
        """Serve one ``GetBlocks``: the handler's outcomes for the first hashes asked,
        cut where the bodies reach ``MAX_GET_BLOCKS_BYTES``, and the blocks as one body."""
        get_many = getattr(handler, "rpc_get_blocks", None)
        if get_many is None:
            raise ProtocolError("GetBlocks is not served here")
        found = await self._invoke(channel, "get_blocks", get_many, request.hashes)
        if isinstance(found, Error):
            await channel.send_message(found)
            return
        reply, payloads = get_blocks_reply(self.node_id, channel.peer, found, request.hashes)
        if payloads:
            await channel.send_with_body(reply, b"".join(payloads))
        else:
            await channel.send_message(reply)

    async def _answer_put(self, handler: RpcHandler, channel: Channel, request: PutBlock) -> bool:
        """Serve one ``PutBlock``; return whether the connection can carry another request."""
        body = BodyReader(channel, self.timeout)
        result = await self._invoke(
            channel, "put_block", handler.rpc_put_block, request.hash, request.header, body
        )
        body.closed = True
        if body.failure is not None:
            # The body itself broke (peer violated the protocol, vanished or stalled):
            # whatever the handler made of it, this connection is finished.
            raise body.failure
        await channel.send_message(result if isinstance(result, Error) else Ok())
        if body.finished:
            return True
        # The handler stopped reading early. Keep reading a little so the client, which
        # stops sending once it has the reply, is not reset before it reads the reply.
        with trio.move_on_after(DRAIN_TIMEOUT):
            await body.drain()
        return False

    async def _answer_put_many(
        self, handler: RpcHandler, channel: Channel, request: PutBlocks
    ) -> bool:
        """Serve one ``PutBlocks``; return whether the connection can carry another
        request."""
        put_many = getattr(handler, "rpc_put_blocks", None)
        if put_many is None:
            raise ProtocolError("PutBlocks is not served here")
        body = BodyReader(channel, self.timeout)
        parts = BodyParts(body, [entry.length for entry in request.blocks])
        result = await self._invoke(channel, "put_blocks", put_many, request.blocks, parts)
        body.closed = True
        if body.failure is not None:
            raise body.failure
        reply: Message
        if isinstance(result, Error):
            reply = result
        else:
            reply = self._put_results(channel, list(result), len(request.blocks))
        await channel.send_message(reply)
        if body.finished:
            return True
        with trio.move_on_after(DRAIN_TIMEOUT):
            await body.drain()
        return False

    def _put_results(self, channel: Channel, outcomes: list[object], count: int) -> Message:
        """The ``PutBlocksReply`` for a handler's per-block outcomes."""
        if len(outcomes) != count:
            log.error(
                "%s: put_blocks returned %d outcomes for %d blocks",
                self.node_id,
                len(outcomes),
                count,
            )
            return Error(INTERNAL, f"{len(outcomes)} outcomes returned for {count} blocks")
        results: list[Error | None] = []
        for outcome in outcomes:
            if outcome is None:
                results.append(None)
            elif isinstance(outcome, TrioblockError):
                log.debug("%s: a block put by %s failed: %r", self.node_id, channel.peer, outcome)
                results.append(error_reply(outcome))
            else:
                log.error("%s: put_blocks failed a block with %r", self.node_id, outcome)
                results.append(Error(INTERNAL, f"{type(outcome).__name__} in put_blocks"))
        return PutBlocksReply(results)

    async def _answer_admin(self, handler: RpcHandler, channel: Channel, request: Admin) -> None:
        """Serve one ``Admin`` request: read its body (if any), call the handler, reply."""
        args: tuple[Any, ...] = (request.request,)
        if request.with_body:
            # A broken or oversized body ends the connection (the exception propagates).
            args = (request.request, await BodyReader(channel, self.timeout).read_all())

        async def call() -> object:
            try:
                return await handler.rpc_admin(*args)
            except TrioblockError as exc:
                # Meant for an operator: the handler's message as is, without a type name.
                log.debug("%s: admin request from %s failed: %r", self.node_id, channel.peer, exc)
                return error_reply(exc, bare=True)

        reply = await self._invoke(channel, "admin", call)
        await self._send_admin_reply(channel, reply)

    async def _answer_layout(
        self, handler: RpcHandler, channel: Channel, peer: str, request: LayoutExchange
    ) -> None:
        """Serve one ``LayoutExchange``: read the peer's history (if sent), let the
        handler merge it, reply with our digest and, if it differs, our history."""
        history = None
        if request.with_body:
            history = await BodyReader(channel, self.timeout).read_all()
        result = await self._invoke(
            channel,
            "layout_exchange",
            handler.rpc_layout_exchange,
            peer,
            request.digest,
            history,
            request.addresses,
        )
        if isinstance(result, Error):
            await channel.send_message(result)
            return
        digest, ours, addresses = result
        reply = LayoutExchangeReply(digest, with_body=ours is not None, addresses=addresses)
        if ours is None:
            await channel.send_message(reply)
        else:
            await channel.send_with_body(reply, ours)

    async def _send_admin_reply(self, channel: Channel, reply: object) -> None:
        if isinstance(reply, Error):
            await channel.send_message(reply)
            return
        body: bytes | bytearray | memoryview | None = None
        if isinstance(reply, tuple) and len(reply) == 2:
            reply, body = reply
            if not isinstance(body, bytes | bytearray | memoryview):
                log.error("%s: rpc_admin returned a body of type %r", self.node_id, type(body))
                await channel.send_message(Error(INTERNAL, "bad handler result"))
                return
        if not isinstance(reply, dict):
            log.error("%s: rpc_admin returned %r, not a dict", self.node_id, type(reply))
            await channel.send_message(Error(INTERNAL, "bad handler result"))
            return
        message = AdminReply(reply, with_body=body is not None)
        try:
            # Encoding comes first: when it fails, nothing has been sent.
            if body is None:
                await channel.send_message(message)
            else:
                await channel.send_with_body(message, bytes(body))
        except (ValueError, TypeError) as exc:  # too large, or not encodable as CBOR
            log.error("%s: cannot send admin reply: %s", self.node_id, exc)
            await channel.send_message(Error(INTERNAL, f"cannot encode reply: {exc}"))

    async def _invoke(
        self, channel: Channel, what: str, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T | Error:
        """Call a handler method; turn its failures into ``Error`` replies."""
        try:
            return await fn(*args)
        except TrioblockError as exc:
            log.debug("%s: %s for %s failed: %r", self.node_id, what, channel.peer, exc)
            return error_reply(exc)
        except Exception as exc:
            # A bug in the handler: it must not take the server down, and it must be seen.
            log.exception("%s: handler %s failed for %s", self.node_id, what, channel.peer)
            return Error(INTERNAL, f"{type(exc).__name__} in {what}")
