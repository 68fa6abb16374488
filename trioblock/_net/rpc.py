"""The RPC layer: requests and replies between nodes, over any :class:`Transport`.

:class:`RpcNode` is both sides. As a client it sends ``GetBlock``, ``PutBlock``,
``NeedBlockQuery`` and ``Admin`` requests; as a server (:meth:`RpcNode.serve`) it answers
them by calling an :class:`RpcHandler` (the node's ``BlockManager``).

Rules kept here:

- Every connection starts with the mutual handshake (:mod:`.handshake`); the handler is
  never called for a peer that has not proven the cluster secret.
- One request in flight per connection; requests are strictly sequential on it. Idle
  authenticated connections are pooled per peer, so repeated requests skip the connect and
  handshake. A connection goes back to the pool only after a complete, well-formed
  exchange; one that failed or was cancelled mid-way is closed. A pooled connection found
  dead before any reply arrived is replaced by a fresh one, once.
- Foreground requests (a user's put or get) and background ones (resync) use separate
  pools, and background connections to a peer are capped, so resync traffic cannot starve
  foreground traffic.
- Every client request runs under a deadline (``timeout``, per call where offered); running
  out raises :class:`~trioblock.errors.TransportError`. Remote ``Error`` replies become
  exceptions: ``missing`` → ``MissingBlockError``, ``corrupt`` → ``CorruptBlockError``,
  ``protocol`` → ``ProtocolError``, ``auth`` → ``AuthenticationError``, anything else →
  ``TransportError``.
- Blocks received by the client are *not* verified here: the caller verifies.
- The server never crashes because of a peer: a protocol violation closes that connection
  only (logged at warning); a ``TrioblockError`` from the handler becomes an ``Error``
  reply of the matching kind; any other exception becomes an ``internal`` reply and is
  logged with its traceback. A ``PutBlock`` body reaches the handler as an async iterator
  of chunks bounded by ``max_body_size``; if the handler leaves part of it unread, the
  connection is closed after the reply instead of being reused.
- Bodies travel in chunks of at most 1 MiB, each written with its own ``send_all``.
- Admin requests (operator commands from the CLI) and their replies may each carry one
  body (``Admin.with_body`` / ``AdminReply.with_body``), framed like a block body, so a
  block of up to ``max_body_size`` can be put or fetched although a message frame holds
  at most 64 KiB. The server reads a request body whole before calling
  ``rpc_admin(request, body)``; a handler returns either a reply map or ``(map, body)``.
  Handlers written before bodies existed (``rpc_admin(request)``) keep working: they are
  called with one argument whenever no body was sent. An error reply to an admin request
  becomes :class:`AdminRequestFailed` (a ``TransportError``, as before) carrying the kind
  and the node's message, except ``auth`` and ``protocol`` which keep their types.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import trio

from .._core.block import BlockHeader, DataBlock
from .._core.hashing import Hash
from ..errors import (
    AuthenticationError,
    CorruptBlockError,
    MissingBlockError,
    ProtocolError,
    TransportError,
    TrioblockError,
)
from .channel import Channel
from .codec import DEFAULT_MAX_BODY_SIZE, BodyChunk, BodyEnd, ConnectionClosed, Event
from .handshake import DEFAULT_HANDSHAKE_TIMEOUT, client_handshake, server_handshake
from .messages import (
    MAX_ERROR_MESSAGE_LEN,
    Admin,
    AdminReply,
    Error,
    GetBlock,
    NeedBlockQuery,
    NeedBlockReply,
    Ok,
    PutBlock,
)
from .transport import Transport

__all__ = [
    "AdminReplyBody",
    "AdminRequestFailed",
    "AdminResult",
    "RpcHandler",
    "RpcNode",
    "RpcStats",
]

log = logging.getLogger("trioblock.net")

T = TypeVar("T")

#: Idle connections kept per peer and pool; more are closed when released. Sized above
#: the usual concurrency of puts (16 in the benchmarks): a smaller pool made a loaded
#: node reconnect and redo the handshake for a good share of its requests.
MAX_IDLE_PER_PEER = 32
#: Seconds a server keeps reading (and discarding) a body its handler left unread, so the
#: client gets the reply before the connection is closed.
DRAIN_TIMEOUT = 5.0


#: A reply map and, optionally, the body that follows it (the answer of ``rpc_admin``).
AdminReplyBody = tuple[dict[str, Any], bytes | bytearray | memoryview]
AdminResult = dict[str, Any] | AdminReplyBody


class AdminRequestFailed(TransportError):
    """A node answered an admin request with an error.

    ``kind`` is the error kind the node sent (``refused`` for a bad or impossible
    request, ``missing`` for an unknown block, ``internal`` for a bug on the node, …);
    ``remote_message`` is the node's explanation, meant for the operator.
    """

    def __init__(self, peer: str, kind: str, remote_message: str) -> None:
        self.peer = peer
        self.kind = kind
        self.remote_message = remote_message
        super().__init__(f"{peer} failed the request ({kind}): {remote_message}")


class RpcHandler(Protocol):
    """What a node does with the requests it receives (implemented by ``BlockManager``)."""

    async def rpc_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        """The stored encoding of ``hash``; ``MissingBlockError`` / ``CorruptBlockError``."""
        ...

    async def rpc_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        """Verify and store a block streamed by a peer; ``CorruptBlockError`` if it is bad."""
        ...

    async def rpc_need_block(self, hash: Hash) -> bool:
        """Whether this node needs (is missing and should hold) ``hash``."""
        ...

    async def rpc_admin(self, request: dict[str, Any], body: bytes | None = None) -> AdminResult:
        """Answer an operator request (maps of plain data, opaque to the network layer).

        ``body`` is the request's body, if it had one; return a reply map, or a reply
        map and a body to stream after it.
        """
        ...


@dataclass
class RpcStats:
    """Counters of one :class:`RpcNode`, for tests and metrics."""

    #: Outgoing connections opened (each with a handshake).
    connections_opened: int = 0
    #: Requests served from a pooled connection.
    connections_reused: int = 0
    #: Outgoing requests started.
    requests: int = 0
    #: Incoming connections accepted past the handshake.
    connections_accepted: int = 0
    #: Incoming connections dropped because the handshake failed.
    handshakes_rejected: int = 0


@dataclass(eq=False)
class _Connection:
    """An authenticated outgoing connection and its pool bookkeeping."""

    channel: Channel
    peer: str
    background: bool
    #: Came from the idle pool (so it may have died while idle).
    reused: bool = False
    #: At least one event of the reply arrived.
    got_reply: bool = False
    #: The exchange completed cleanly: the connection may go back to the pool.
    done: bool = False
    #: Background slot held while leased.
    slot: trio.Semaphore | None = None


def _error_reply(exc: TrioblockError) -> Error:
    if isinstance(exc, MissingBlockError):
        return Error("missing", str(exc))
    if isinstance(exc, CorruptBlockError):
        return Error("corrupt", str(exc))
    if isinstance(exc, AuthenticationError):
        return Error("auth", str(exc))
    if isinstance(exc, ProtocolError):
        return Error("protocol", str(exc))
    return Error("refused", f"{type(exc).__name__}: {exc}")


def _admin_error(peer: str, error: Error) -> TrioblockError:
    if error.kind == "auth":
        return AuthenticationError(f"{peer}: {error.message or error.kind}")
    if error.kind == "protocol":
        return ProtocolError(f"{peer}: {error.message or error.kind}")
    return AdminRequestFailed(peer, error.kind, error.message)


def _remote_error(peer: str, error: Error, hash: Hash | None) -> TrioblockError:
    text = f"{peer}: {error.message}" if error.message else f"{peer}: {error.kind}"
    if error.kind == "missing" and hash is not None:
        return MissingBlockError(hash, f"block {hash.hex()} missing on {peer}")
    if error.kind == "corrupt" and hash is not None:
        return CorruptBlockError(hash, text)
    if error.kind == "protocol":
        return ProtocolError(text)
    if error.kind == "auth":
        return AuthenticationError(text)
    return TransportError(f"{peer} failed the request ({error.kind}): {error.message}")


class _BlockBody:
    """The body of a block sent by a server, as an async iterator (client side).

    Each chunk must arrive within ``timeout``. Once the end frame is read, the connection
    is marked reusable.
    """

    def __init__(self, conn: _Connection, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self.finished = False
        self.released = False

    def __aiter__(self) -> _BlockBody:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self.finished:
                raise StopAsyncIteration
            if self.released:
                raise TransportError("the block stream was used after its context exited")
            try:
                with trio.fail_after(self._timeout):
                    event = await self._conn.channel.receive_event()
            except trio.TooSlowError:
                raise TransportError(
                    f"{self._conn.peer} sent no block data for {self._timeout}s"
                ) from None
            if isinstance(event, BodyChunk):
                if event.data:
                    return event.data
                continue
            if isinstance(event, BodyEnd):
                self.finished = True
                self._conn.done = True
                raise StopAsyncIteration
            raise ProtocolError(f"unexpected {type(event).__name__} inside a block body")


class _IncomingBody:
    """The body of a ``PutBlock`` request, as the server hands it to the handler.

    Remembers whether it was read to the end and whether reading it failed, so the server
    can tell whether the connection is still usable whatever the handler did with errors.
    """

    def __init__(self, channel: Channel, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout
        self.finished = False
        self.failure: TrioblockError | None = None
        self.closed = False

    def __aiter__(self) -> _IncomingBody:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self.finished:
                raise StopAsyncIteration
            if self.failure is not None:
                raise self.failure
            if self.closed:
                raise TransportError("the request body was read after the request ended")
            try:
                with trio.fail_after(self._timeout):
                    event = await self._channel.receive_event()
            except trio.TooSlowError:
                self.failure = TransportError(
                    f"{self._channel.peer} stalled sending a body for {self._timeout}s"
                )
                raise self.failure from None
            except (ProtocolError, TransportError) as exc:
                self.failure = exc
                raise
            if isinstance(event, BodyChunk):
                if event.data:
                    return event.data
                continue
            if isinstance(event, BodyEnd):
                self.finished = True
                raise StopAsyncIteration
            self.failure = ProtocolError(f"unexpected {type(event).__name__} inside a body")
            raise self.failure

    async def drain(self) -> None:
        """Read and discard the rest of the body, if the connection still allows it."""
        while not self.finished and self.failure is None:
            try:
                await self.__anext__()
            except StopAsyncIteration:
                return
            except TrioblockError:
                return


class RpcNode:
    """One node's end of the RPC protocol: a client with connection pools, and a server.

    ``node_id`` is this node's id (sent in the handshake); ``secret`` the cluster's
    ``rpc_secret``; ``timeout`` the default deadline of a request; ``max_body_size`` the
    largest body accepted from a peer (the largest encoded block);
    ``background_connections_per_peer`` caps concurrent background requests to a peer.
    """

    def __init__(
        self,
        node_id: str,
        transport: Transport,
        secret: bytes,
        *,
        timeout: float = 30.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        background_connections_per_peer: int = 2,
        handshake_timeout: float | None = None,
        max_idle_per_peer: int = MAX_IDLE_PER_PEER,
    ) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        if background_connections_per_peer < 1:
            raise ValueError("background_connections_per_peer must be at least 1")
        self.node_id = node_id
        self.transport = transport
        self.timeout = timeout
        self.max_body_size = max_body_size
        self.background_connections_per_peer = background_connections_per_peer
        self.handshake_timeout = (
            handshake_timeout
            if handshake_timeout is not None
            else min(timeout, DEFAULT_HANDSHAKE_TIMEOUT)
        )
        self.max_idle_per_peer = max_idle_per_peer
        self.stats = RpcStats()
        self._secret = bytes(secret)
        self._idle: dict[tuple[str, bool], list[_Connection]] = {}
        self._background_slots: dict[str, trio.Semaphore] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"RpcNode({self.node_id!r}, {self.transport!r})"

    # ===================================================================================
    # Client side: connections and the pool

    async def _connect(self, peer: str, background: bool) -> _Connection:
        try:
            stream = await self.transport.connect(peer)
        except OSError as exc:  # a transport that forgot to translate its errors
            raise TransportError(f"cannot connect to {peer}: {exc}") from exc
        channel = Channel(stream, max_body_size=self.max_body_size, peer=peer)
        try:
            with trio.fail_after(self.handshake_timeout):
                await client_handshake(
                    channel, node_id=self.node_id, expected_peer=peer, secret=self._secret
                )
        except trio.TooSlowError:
            await channel.aclose()
            raise TransportError(
                f"handshake with {peer} timed out after {self.handshake_timeout}s"
            ) from None
        except BaseException:
            await channel.aclose()
            raise
        self.stats.connections_opened += 1
        log.debug("%s: connected to %s (%s)", self.node_id, peer, _pool_name(background))
        return _Connection(channel, peer, background)

    async def _acquire(self, peer: str, background: bool, *, fresh: bool) -> _Connection:
        if self._closed:
            raise TransportError(f"{self.node_id}: the RPC node is closed")
        slot: trio.Semaphore | None = None
        if background:
            slot = self._background_slots.get(peer)
            if slot is None:
                slot = trio.Semaphore(self.background_connections_per_peer)
                self._background_slots[peer] = slot
            await slot.acquire()
        try:
            idle = self._idle.get((peer, background))
            if idle and not fresh:
                conn = idle.pop()
                conn.reused = True
                self.stats.connections_reused += 1
            else:
                conn = await self._connect(peer, background)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        conn.slot = slot
        conn.got_reply = False
        conn.done = False
        return conn

    async def _release(self, conn: _Connection) -> None:
        if conn.slot is not None:
            conn.slot.release()
            conn.slot = None
        idle = self._idle.setdefault((conn.peer, conn.background), [])
        codec = conn.channel.codec
        reusable = conn.done and not codec.failed and not codec.in_body and not codec.sending_body
        if reusable and not self._closed and len(idle) < self.max_idle_per_peer:
            idle.append(conn)
        else:
            await conn.channel.aclose()

    async def _discard_idle(self, peer: str, background: bool) -> None:
        for conn in self._idle.pop((peer, background), []):
            await conn.channel.aclose()

    async def _run(
        self, peer: str, background: bool, op: Callable[[_Connection], Awaitable[T]]
    ) -> tuple[_Connection, T]:
        """Run ``op`` on a leased connection; on success the connection stays leased.

        A pooled connection that fails before any reply arrived probably died while idle
        (the peer restarted): the pool is emptied and ``op`` runs once more on a fresh one.
        """
        fresh = False
        while True:
            self.stats.requests += 1
            conn = await self._acquire(peer, background, fresh=fresh)
            try:
                return conn, await op(conn)
            except TransportError as exc:
                await self._release(conn)
                if conn.reused and not conn.got_reply and not fresh:
                    log.debug("%s: pooled connection to %s was dead (%s)", self.node_id, peer, exc)
                    await self._discard_idle(peer, background)
                    fresh = True
                    continue
                raise
            except BaseException:
                await self._release(conn)
                raise

    async def _call(
        self,
        peer: str,
        background: bool,
        seconds: float | None,
        op: Callable[[_Connection], Awaitable[T]],
    ) -> T:
        deadline = self.timeout if seconds is None else seconds
        try:
            with trio.fail_after(deadline):
                conn, result = await self._run(peer, background, op)
                await self._release(conn)
                return result
        except trio.TooSlowError:
            raise TransportError(f"request to {peer} timed out after {deadline}s") from None

    async def _receive(self, conn: _Connection) -> Event:
        event = await conn.channel.receive_event()
        if isinstance(event, ConnectionClosed):
            raise TransportError(f"{conn.peer} closed the connection")
        conn.got_reply = True
        return event

    async def _receive_block_header(self, conn: _Connection, hash: Hash) -> BlockHeader:
        event = await self._receive(conn)
        if isinstance(event, Error):
            conn.done = True
            raise _remote_error(conn.peer, event, hash)
        if not isinstance(event, PutBlock):
            raise ProtocolError(f"{conn.peer} answered GetBlock with {type(event).__name__}")
        if event.hash != hash:
            raise ProtocolError(f"{conn.peer} answered GetBlock with another block")
        return event.header

    # ===================================================================================
    # Client side: requests

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

        async def op(conn: _Connection) -> DataBlock:
            await conn.channel.send_message(GetBlock(hash, order_tag))
            header = await self._receive_block_header(conn, hash)
            parts: list[bytes] = []
            while True:
                event = await self._receive(conn)
                if isinstance(event, BodyChunk):
                    parts.append(event.data)
                elif isinstance(event, BodyEnd):
                    conn.done = True
                    return DataBlock(header, b"".join(parts))
                else:  # the codec allows nothing else inside a body
                    raise ProtocolError(f"unexpected {type(event).__name__} inside a body")

        return await self._call(peer, background, None, op)

    @asynccontextmanager
    async def stream_block(
        self, peer: str, hash: Hash, order_tag: int | None = None
    ) -> AsyncIterator[tuple[BlockHeader, AsyncIterator[bytes]]]:
        """Fetch block ``hash`` from ``peer`` as ``(header, encoded chunks)``, unverified.

        Entering waits for the peer's answer (within the timeout) and raises as
        :meth:`get_block` does; each chunk must then arrive within the timeout. Leaving
        before the last chunk closes the connection instead of pooling it.
        """

        async def op(conn: _Connection) -> BlockHeader:
            await conn.channel.send_message(GetBlock(hash, order_tag))
            return await self._receive_block_header(conn, hash)

        try:
            with trio.fail_after(self.timeout):
                conn, header = await self._run(peer, False, op)
        except trio.TooSlowError:
            raise TransportError(f"request to {peer} timed out after {self.timeout}s") from None
        body = _BlockBody(conn, self.timeout)
        try:
            yield header, body
        finally:
            body.released = True
            await self._release(conn)

    async def put_block(
        self, peer: str, hash: Hash, block: DataBlock, *, background: bool = False
    ) -> None:
        """Send ``block`` to ``peer`` to store under ``hash``; return once it acknowledged.

        The body is streamed while the reply is awaited, so a peer that rejects the block
        early (``CorruptBlockError``, …) is heard without sending the rest.
        """

        async def op(conn: _Connection) -> None:
            channel = conn.channel
            await channel.send_message(PutBlock(hash, block.header))
            sent = False
            send_error: TransportError | None = None
            reply: Event | None = None
            receive_error: TrioblockError | None = None

            async def send_body() -> None:
                nonlocal sent, send_error
                try:
                    await channel.send_body(block.payload)
                    sent = True
                except TransportError as exc:
                    send_error = exc

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_body)
                try:
                    reply = await self._receive(conn)
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
                raise _remote_error(peer, reply, hash)
            raise ProtocolError(f"{peer} answered PutBlock with {type(reply).__name__}")

        await self._call(peer, background, None, op)

    async def need_block(
        self,
        peer: str,
        hash: Hash,
        *,
        background: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> bool:
        """Ask ``peer`` whether it needs block ``hash``; ``timeout`` overrides the default."""

        async def op(conn: _Connection) -> bool:
            await conn.channel.send_message(NeedBlockQuery(hash))
            event = await self._receive(conn)
            if isinstance(event, NeedBlockReply):
                conn.done = True
                return event.needed
            if isinstance(event, Error):
                conn.done = True
                raise _remote_error(peer, event, hash)
            raise ProtocolError(f"{peer} answered NeedBlockQuery with {type(event).__name__}")

        return await self._call(peer, background, timeout, op)

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

        async def op(conn: _Connection) -> tuple[dict[str, Any], bytes | None]:
            channel = conn.channel
            await channel.send_message(Admin(request, with_body=body is not None))
            if body is not None:
                try:
                    await channel.send_body(body)
                except TransportError as exc:
                    # The node may have refused the body (too large…) and said why
                    # before closing: prefer its reason to a bare broken pipe.
                    with trio.move_on_after(1.0):
                        event = await channel.receive_event()
                        if isinstance(event, Error):
                            raise _admin_error(peer, event) from exc
                    raise
            event = await self._receive(conn)
            if isinstance(event, Error):
                conn.done = True
                raise _admin_error(peer, event)
            if not isinstance(event, AdminReply):
                raise ProtocolError(f"{peer} answered Admin with {type(event).__name__}")
            if not event.with_body:
                conn.done = True
                return event.reply, None
            parts: list[bytes] = []
            while True:
                part = await self._receive(conn)
                if isinstance(part, BodyChunk):
                    parts.append(part.data)
                elif isinstance(part, BodyEnd):
                    conn.done = True
                    return event.reply, b"".join(parts)
                else:  # the codec allows nothing else inside a body
                    raise ProtocolError(f"unexpected {type(part).__name__} inside a body")

        return await self._call(peer, False, timeout, op)

    def idle_connections(self, peer: str | None = None) -> int:
        """How many pooled connections wait idle (to ``peer``, or to anyone)."""
        return sum(len(v) for (p, _), v in self._idle.items() if peer is None or p == peer)

    async def aclose(self) -> None:
        """Close every idle connection; later requests raise ``TransportError``."""
        self._closed = True
        pools, self._idle = self._idle, {}
        for conns in pools.values():
            for conn in conns:
                await conn.channel.aclose()

    # ===================================================================================
    # Server side

    async def serve(
        self,
        handler: RpcHandler,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer incoming requests with ``handler`` until cancelled.

        Start it with ``await nursery.start(rpc.serve, handler)``: it returns once the
        transport is accepting connections.
        """
        serve_one = partial(self._serve_connection, handler)
        await self.transport.serve(serve_one, task_status=task_status)

    async def _serve_connection(self, handler: RpcHandler, stream: trio.abc.Stream) -> None:
        channel = Channel(stream, max_body_size=self.max_body_size)
        try:
            try:
                with trio.fail_after(self.handshake_timeout):
                    peer = await server_handshake(
                        channel, node_id=self.node_id, secret=self._secret
                    )
            except (trio.TooSlowError, TrioblockError) as exc:
                self.stats.handshakes_rejected += 1
                level = logging.WARNING if isinstance(exc, ProtocolError) else logging.INFO
                log.log(level, "%s: handshake failed, dropping connection: %r", self.node_id, exc)
                return
            self.stats.connections_accepted += 1
            await self._serve_requests(handler, channel, peer)
        except ProtocolError as exc:
            log.warning("%s: protocol error from %s, closing: %s", self.node_id, channel.peer, exc)
            if not channel.codec.sending_body:
                with trio.move_on_after(1.0), suppress(TransportError):
                    await channel.send_message(Error("protocol", str(exc)))
        except TransportError as exc:
            log.debug("%s: connection from %s ended: %s", self.node_id, channel.peer, exc)
        finally:
            await channel.aclose()

    async def _serve_requests(self, handler: RpcHandler, channel: Channel, peer: str) -> None:
        while True:
            request = await channel.receive_event()
            if isinstance(request, ConnectionClosed):
                return
            if isinstance(request, GetBlock):
                block = await self._invoke(
                    channel, "get_block", handler.rpc_get_block, request.hash, request.order_tag
                )
                if isinstance(block, Error):
                    await channel.send_message(block)
                else:
                    await channel.send_message(PutBlock(request.hash, block.header))
                    await channel.send_body(block.payload)
            elif isinstance(request, PutBlock):
                if not await self._answer_put(handler, channel, request):
                    return
            elif isinstance(request, NeedBlockQuery):
                needed = await self._invoke(
                    channel, "need_block", handler.rpc_need_block, request.hash
                )
                await channel.send_message(
                    needed if isinstance(needed, Error) else NeedBlockReply(bool(needed))
                )
            elif isinstance(request, Admin):
                await self._answer_admin(handler, channel, request)
            else:
                raise ProtocolError(f"{peer} sent {type(request).__name__}, which is not a request")

    async def _answer_put(self, handler: RpcHandler, channel: Channel, request: PutBlock) -> bool:
        """Serve one ``PutBlock``; return whether the connection can carry another request."""
        body = _IncomingBody(channel, self.timeout)
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

    async def _answer_admin(self, handler: RpcHandler, channel: Channel, request: Admin) -> None:
        """Serve one ``Admin`` request: read its body (if any), call the handler, reply."""
        args: tuple[Any, ...] = (request.request,)
        if request.with_body:
            # A broken or oversized body ends the connection (the exception propagates).
            incoming = _IncomingBody(channel, self.timeout)
            args = (request.request, b"".join([chunk async for chunk in incoming]))

        async def call() -> object:
            try:
                return await handler.rpc_admin(*args)
            except TrioblockError as exc:
                # Meant for an operator: the handler's message as is, without a type name.
                log.debug("%s: admin request from %s failed: %r", self.node_id, channel.peer, exc)
                return Error(_error_reply(exc).kind, str(exc)[:MAX_ERROR_MESSAGE_LEN])

        reply = await self._invoke(channel, "admin", call)
        await self._send_admin_reply(channel, reply)

    async def _send_admin_reply(self, channel: Channel, reply: object) -> None:
        if isinstance(reply, Error):
            await channel.send_message(reply)
            return
        body: bytes | bytearray | memoryview | None = None
        if isinstance(reply, tuple) and len(reply) == 2:
            reply, body = reply
            if not isinstance(body, bytes | bytearray | memoryview):
                log.error("%s: rpc_admin returned a body of type %r", self.node_id, type(body))
                await channel.send_message(Error("internal", "bad handler result"))
                return
        if not isinstance(reply, dict):
            log.error("%s: rpc_admin returned %r, not a dict", self.node_id, type(reply))
            await channel.send_message(Error("internal", "bad handler result"))
            return
        try:
            frame = channel.codec.send_message(AdminReply(reply, with_body=body is not None))
        except (ValueError, TypeError) as exc:  # too large, or not encodable as CBOR
            log.error("%s: cannot send admin reply: %s", self.node_id, exc)
            await channel.send_message(Error("internal", f"cannot encode reply: {exc}"))
            return
        await channel.send_raw(frame)
        if body is not None:
            await channel.send_body(bytes(body))

    async def _invoke(
        self, channel: Channel, what: str, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T | Error:
        """Call a handler method; turn its failures into ``Error`` replies."""
        try:
            return await fn(*args)
        except TrioblockError as exc:
            log.debug("%s: %s for %s failed: %r", self.node_id, what, channel.peer, exc)
            return _error_reply(exc)
        except Exception as exc:
            # A bug in the handler: it must not take the server down, and it must be seen.
            log.exception("%s: handler %s failed for %s", self.node_id, what, channel.peer)
            return Error("internal", f"{type(exc).__name__} in {what}")


def _pool_name(background: bool) -> str:
    return "background" if background else "foreground"
