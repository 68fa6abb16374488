"""Authenticated outgoing connections, pooled per peer.

Rules kept here:

- Every connection starts with the mutual handshake (:mod:`.handshake`), under the
  handshake timeout; a connection is handed out only once both sides are authenticated.
- One request in flight per connection. Idle connections are pooled per peer, so repeated
  requests skip the connect and the handshake. A connection goes back to the pool only
  after a complete, well-formed exchange (the request code sets :attr:`Connection.done`);
  one that failed or was cancelled mid-way is closed. A pooled connection found dead
  before any reply arrived is replaced by a fresh one, once.
- Foreground requests (a user's put or get) and background ones (resync) use separate
  pools, and background connections to a peer are capped, so resync traffic cannot
  starve foreground traffic.
- Foreground connections to a peer are capped too (:data:`MAX_CONNECTIONS_PER_PEER`): a
  peer that answers slowly makes further requests wait for a connection, within their
  deadline, instead of opening one connection (and one handshake) per request. A put
  returns at its quorum while its last copies are still being sent, so without the cap
  a lagging node would gather an unbounded number of connections.
- :meth:`ConnectionPool.call` runs an exchange under a deadline (the pool's default, or
  one given per call); running out raises :class:`~trioblock.errors.TransportError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from ..errors import TransportError
from .channel import Channel
from .codec import ConnectionClosed, Event
from .handshake import client_handshake
from .reach import Reachability
from .transport import Transport

__all__ = [
    "MAX_CONNECTIONS_PER_PEER",
    "MAX_IDLE_PER_PEER",
    "Connection",
    "ConnectionPool",
    "RpcStats",
]

log = logging.getLogger("trioblock.net")

T = TypeVar("T")

#: Idle connections kept per peer and pool; more are closed when released. Sized above
#: the usual concurrency of puts (16 in the benchmarks): a smaller pool made a loaded
#: node reconnect and redo the handshake for a good share of its requests.
MAX_IDLE_PER_PEER = 32
#: Foreground connections leased to one peer at once; more requests wait for one.
MAX_CONNECTIONS_PER_PEER = 64


@dataclass
class RpcStats:
    """Counters of one RPC node, for tests and metrics."""

    #: Outgoing connections opened (each with a handshake).
    connections_opened: int = 0
    #: Requests served from a pooled connection.
    connections_reused: int = 0
    #: Outgoing requests started.
    requests: int = 0
    #: Incoming connections accepted past the handshake.
    connections_accepted: int = 0
    #: Incoming connections dropped because the handshake failed (a bad proof, a
    #: protocol violation or a timeout; not a peer that went away mid-handshake).
    handshakes_rejected: int = 0


@dataclass(eq=False)
class Connection:
    """An authenticated outgoing connection, leased to one exchange at a time."""

    channel: Channel
    peer: str
    background: bool
    #: Came from the idle pool (so it may have died while idle).
    reused: bool = False
    #: At least one event of the reply arrived.
    got_reply: bool = False
    #: The exchange completed cleanly: the connection may go back to the pool.
    done: bool = False
    #: The pool's slot for this peer, held while leased.
    slot: trio.Semaphore | None = None

    async def receive(self) -> Event:
        """The next event of the reply; ``TransportError`` if the peer closed instead."""
        event = await self.channel.receive_event()
        if isinstance(event, ConnectionClosed):
            raise TransportError(f"{self.peer} closed the connection")
        self.got_reply = True
        return event


class ConnectionPool:
    """Outgoing connections of node ``node_id`` (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        transport: Transport,
        secret: bytes,
        *,
        timeout: float,
        handshake_timeout: float,
        max_body_size: int,
        background_connections_per_peer: int,
        max_idle_per_peer: int,
        stats: RpcStats,
        connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
        reachability: Reachability | None = None,
    ) -> None:
        if background_connections_per_peer < 1:
            raise ValueError("background_connections_per_peer must be at least 1")
        if connections_per_peer < 1:
            raise ValueError("connections_per_peer must be at least 1")
        self.node_id = node_id
        self.transport = transport
        self.timeout = timeout
        self.handshake_timeout = handshake_timeout
        self.max_body_size = max_body_size
        self.background_connections_per_peer = background_connections_per_peer
        self.connections_per_peer = connections_per_peer
        self.max_idle_per_peer = max_idle_per_peer
        self.stats = stats
        #: peers it could not connect to, and those that answered again
        self.reachability = reachability if reachability is not None else Reachability()
        self._secret = secret
        self._idle: dict[tuple[str, bool], list[Connection]] = {}
        self._slots: dict[tuple[str, bool], trio.Semaphore] = {}
        self._closed = False

    async def _connect(self, peer: str, background: bool) -> Connection:
        try:
            stream = await self.transport.connect(peer)
        except TransportError:
            self.reachability.unreachable(peer)
            raise
        except OSError as exc:  # a transport that forgot to translate its errors
            self.reachability.unreachable(peer)
            raise TransportError(f"cannot connect to {peer}: {exc}") from exc
        channel = Channel(stream, max_body_size=self.max_body_size, peer=peer)
        try:
            with trio.fail_after(self.handshake_timeout):
                await client_handshake(
                    channel, node_id=self.node_id, expected_peer=peer, secret=self._secret
                )
        except trio.TooSlowError:
            await channel.aclose()
            self.reachability.unreachable(peer)
            raise TransportError(
                f"handshake with {peer} timed out after {self.handshake_timeout}s"
            ) from None
        except BaseException:
            await channel.aclose()
            raise
        self.reachability.reached(peer)
        self.stats.connections_opened += 1
        pool = "background" if background else "foreground"
        log.debug("%s: connected to %s (%s)", self.node_id, peer, pool)
        return Connection(channel, peer, background)

    async def _acquire(self, peer: str, background: bool, *, fresh: bool) -> Connection:
        if self._closed:
            raise TransportError(f"{self.node_id}: the RPC node is closed")
        slot = self._slots.get((peer, background))
        if slot is None:
            cap = self.background_connections_per_peer if background else self.connections_per_peer
            slot = self._slots[(peer, background)] = trio.Semaphore(cap)
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
            slot.release()
            raise
        conn.slot = slot
        conn.got_reply = False
        conn.done = False
        return conn

    async def release(self, conn: Connection) -> None:
        """End a lease: pool the connection if its exchange completed cleanly, else close."""
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

    async def lease(
        self, peer: str, background: bool, op: Callable[[Connection], Awaitable[T]]
    ) -> tuple[Connection, T]:
        """Run ``op`` on a leased connection; on success the caller must :meth:`release` it.

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
                await self.release(conn)
                if conn.reused and not conn.got_reply and not fresh:
                    log.debug("%s: pooled connection to %s was dead (%s)", self.node_id, peer, exc)
                    await self._discard_idle(peer, background)
                    fresh = True
                    continue
                raise
            except BaseException:
                await self.release(conn)
                raise

    async def call(
        self,
        peer: str,
        background: bool,
        seconds: float | None,
        op: Callable[[Connection], Awaitable[T]],
    ) -> T:
        """Run ``op`` on a connection to ``peer`` within ``seconds`` (default: the timeout)."""
        deadline = self.timeout if seconds is None else seconds
        try:
            with trio.fail_after(deadline):
                conn, result = await self.lease(peer, background, op)
                await self.release(conn)
                return result
        except trio.TooSlowError:
            raise TransportError(f"request to {peer} timed out after {deadline}s") from None

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
