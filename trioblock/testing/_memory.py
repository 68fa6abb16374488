"""``MemoryNetwork``: in-process connections between the nodes of one ``trio.run``, with faults.

Each node gets a :class:`MemoryTransport` (a real ``Transport``) from
:meth:`MemoryNetwork.transport`. A connection is a pair of :class:`MemoryStream` ends
joined by two bounded byte pipes, so a slow reader applies backpressure to its writer as a
socket would.

Rules kept here:

- Faults are decided at ``connect`` and ``send_all`` time, from the *sending* node's
  settings: a partition refuses connections across it and breaks the ones that exist; a
  delay sleeps (with ``trio.sleep``, so ``MockClock`` drives it) before each send; a drop
  probability fails a connect or breaks the connection on a send; a corruption counter
  flips one byte in the payload of the next non-empty body-chunk frames the node writes.
- Frames are recognised by following the length-prefixed frame stream of each direction
  of a connection (:class:`FrameTracker`), across ``send_all`` calls: how the sender
  groups frames into writes (one per write, several per write, a frame split over
  writes) changes nothing. The byte to flip is chosen when the frame's header has passed.
- Random decisions use :attr:`MemoryNetwork.random`, seeded, so a failing test replays.
- A node is reachable only while its transport's ``serve`` runs. When ``serve`` ends, or
  :meth:`MemoryNetwork.crash` is called, the node's connections break and ``connect`` to
  it raises ``TransportError`` ("connection refused").
- Streams keep Trio's stream semantics (checked by ``trio.testing.check_two_way_stream``):
  ``ClosedResourceError`` after our own close, ``BrokenResourceError`` when the connection
  broke or the other side stopped reading, ``b""`` at end of data, ``BusyResourceError``
  for concurrent use of one direction.
"""

from __future__ import annotations

import logging
import operator
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from .._net.transport import StreamHandler
from ..errors import TransportError
from ._frames import FrameTracker

__all__ = ["MemoryNetwork", "MemoryStream", "MemoryTransport", "NetworkStats"]

log = logging.getLogger("trioblock.net")

#: Bytes a pipe buffers before ``send_all`` waits for the reader.
DEFAULT_BUFFER_SIZE = 256 * 1024


@dataclass
class NetworkStats:
    """Counters of a :class:`MemoryNetwork`, for assertions in tests."""

    #: Connections successfully opened, in total.
    connections_opened: int = 0
    #: Connections opened, by the node that opened them.
    connections_by_node: Counter[str] = field(default_factory=Counter)
    #: Connections refused (nobody serving, partition, crash, dropped connect).
    connections_refused: int = 0
    #: Bytes accepted by ``send_all``, by sending node.
    bytes_sent: Counter[str] = field(default_factory=Counter)
    #: Sends (and connects) failed on purpose by ``set_drop``.
    drops: int = 0
    #: Body-chunk frames altered by ``corrupt_next``.
    corrupted_chunks: int = 0


class _Pipe:
    """One direction of a connection: a bounded byte buffer with wake-ups."""

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.eof = False  # the writer closed its end
        self.reader_closed = False
        self.broken: str | None = None
        self.readable = trio.lowlevel.ParkingLot()
        self.writable = trio.lowlevel.ParkingLot()
        self.frames = FrameTracker()

    def wake(self) -> None:
        self.readable.unpark_all()
        self.writable.unpark_all()


class _Connection:
    """Both ends of one connection, as the network tracks it."""

    def __init__(self, net: MemoryNetwork, client: str, server: str, serve_token: object) -> None:
        self.client = client
        self.server = server
        self.serve_token = serve_token
        self.to_server = _Pipe(net.buffer_size)
        self.to_client = _Pipe(net.buffer_size)
        self.client_end = MemoryStream(net, self, client, self.to_server, self.to_client)
        self.server_end = MemoryStream(net, self, server, self.to_client, self.to_server)

    def involves(self, node_id: str) -> bool:
        return node_id in (self.client, self.server)

    def break_(self, reason: str) -> None:
        for pipe in (self.to_server, self.to_client):
            if pipe.broken is None:
                pipe.broken = reason
            pipe.wake()


class MemoryStream(trio.abc.Stream):
    """One end of an in-memory connection, owned by node ``local``."""

    def __init__(
        self, net: MemoryNetwork, conn: _Connection, local: str, out: _Pipe, in_: _Pipe
    ) -> None:
        self._net = net
        self._conn = conn
        self.local = local
        self._out = out
        self._in = in_
        self._closed = False
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        return f"<MemoryStream {self._conn.client}->{self._conn.server} at {self.local}>"

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._out.broken is not None:
            raise trio.BrokenResourceError(self._out.broken)
        if self._out.reader_closed:
            raise trio.BrokenResourceError("the other side closed the connection")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, waiting while the other side's buffer is full."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            await self._net._before_send(self)
            payload = self._out.frames.process(bytes(data), partial(self._net._pick, self.local))
            while True:
                self._check_send()
                if len(self._out.buffer) < self._out.limit:
                    break
                await self._out.writable.park()
            self._out.buffer += payload
            self._net.stats.bytes_sent[self.local] += len(payload)
            self._out.readable.unpark_all()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Return once there is room in the other side's buffer (or the stream broke)."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if (
                    self._out.broken is not None
                    or self._out.reader_closed
                    or len(self._out.buffer) < self._out.limit
                ):
                    return
                await self._out.writable.park()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` received bytes; ``b""`` once the other side closed."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._in
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if pipe.broken is not None:
                    raise trio.BrokenResourceError(pipe.broken)
                if pipe.buffer:
                    n = len(pipe.buffer) if max_bytes is None else max_bytes
                    data = bytes(pipe.buffer[:n])
                    del pipe.buffer[:n]
                    pipe.writable.unpark_all()
                    return data
                if pipe.eof:
                    return b""
                await pipe.readable.park()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close this end: the other side reads ``b""``, then its sends break."""
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._in.reader_closed = True
            self._out.wake()
            self._in.wake()
            self._net._closed_end(self._conn)
        await trio.lowlevel.checkpoint()


class MemoryTransport:
    """The :class:`~trioblock._net.transport.Transport` of one node on a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id

    def __repr__(self) -> str:
        return f"MemoryTransport({self.node_id!r})"

    async def connect(self, node_id: str) -> trio.abc.Stream:
        """A new stream to ``node_id``; ``TransportError`` if it is not reachable."""
        return await self.network._connect(self.node_id, node_id)

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections to this node until cancelled, running ``handler`` on each."""
        net = self.network
        async with trio.open_nursery() as nursery:
            token = net._listen(self.node_id, nursery, handler)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                net._unlisten(self.node_id, token)
                nursery.cancel_scope.cancel()


@dataclass
class _Listener:
    nursery: trio.Nursery
    handler: StreamHandler
    token: object


class MemoryNetwork:
    """An in-process network for the nodes of one ``trio.run``, with fault injection.

    ``seed`` seeds :attr:`random` (used for drops and for which byte to corrupt);
    ``buffer_size`` is how many bytes each direction of a connection buffers.
    """

    def __init__(self, *, seed: int = 0, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be positive")
        self.random = random.Random(seed)
        self.buffer_size = buffer_size
        self.stats = NetworkStats()
        self._transports: dict[str, MemoryTransport] = {}
        self._listeners: dict[str, _Listener] = {}
        self._connections: set[_Connection] = set()
        self._partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self._delays: dict[str, float] = {}
        self._drops: dict[str, float] = {}
        self._corrupt: Counter[str] = Counter()
        self._crashed: set[str] = set()

    def __repr__(self) -> str:
        return f"<MemoryNetwork nodes={sorted(self._transports)} serving={sorted(self._listeners)}>"

    # -- nodes ----------------------------------------------------------------------

    def transport(self, node_id: str) -> MemoryTransport:
        """The transport of ``node_id`` (the same object on every call)."""
        if node_id not in self._transports:
            self._transports[node_id] = MemoryTransport(self, node_id)
        return self._transports[node_id]

    def is_serving(self, node_id: str) -> bool:
        """Whether ``node_id`` currently accepts connections."""
        return node_id in self._listeners

    @property
    def open_connections(self) -> int:
        """Connections with at least one end still open."""
        return len(self._connections)

    # -- fault controls -------------------------------------------------------------

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Cut every link between a node of ``group_a`` and one of ``group_b``.

        Existing connections across the cut break; new ones are refused until :meth:`heal`.
        """
        a, b = frozenset(group_a), frozenset(group_b)
        self._partitions.append((a, b))
        for conn in list(self._connections):
            if self._cut(conn.client, conn.server):
                conn.break_(f"network partition between {conn.client} and {conn.server}")

    def heal(self) -> None:
        """Remove every partition, delay, drop probability and pending corruption."""
        self._partitions.clear()
        self._delays.clear()
        self._drops.clear()
        self._corrupt.clear()

    def set_delay(self, node_id: str, seconds: float) -> None:
        """Delay every send (and connect) from ``node_id`` by ``seconds`` (0 removes it)."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        if seconds:
            self._delays[node_id] = seconds
        else:
            self._delays.pop(node_id, None)

    def set_drop(self, node_id: str, probability: float) -> None:
        """Fail each connect or send from ``node_id`` with ``probability`` (0 removes it).

        A failed send breaks its connection, as a lost TCP connection would.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError("a probability is between 0 and 1")
        if probability:
            self._drops[node_id] = probability
        else:
            self._drops.pop(node_id, None)

    def corrupt_next(self, node_id: str, n: int = 1) -> None:
        """Flip one byte in the payload of the next ``n`` body chunks ``node_id`` sends."""
        if n < 0:
            raise ValueError("n cannot be negative")
        self._corrupt[node_id] += n

    def crash(self, node_id: str) -> None:
        """Break every connection of ``node_id`` and make it unreachable, as if it died.

        The node stays unreachable, and cannot connect out, until its transport serves
        again (a restart: cancel the old ``serve`` and start a new one).
        """
        self._crashed.add(node_id)
        self._listeners.pop(node_id, None)
        for conn in list(self._connections):
            if conn.involves(node_id):
                conn.break_(f"node {node_id} crashed")

    # -- internals used by MemoryTransport and MemoryStream ---------------------------

    def _cut(self, x: str, y: str) -> bool:
        return any((x in a and y in b) or (x in b and y in a) for a, b in self._partitions)

    def _dropped(self, node_id: str) -> bool:
        p = self._drops.get(node_id, 0.0)
        if p and self.random.random() < p:
            self.stats.drops += 1
            return True
        return False

    def _refuse(self, message: str) -> TransportError:
        self.stats.connections_refused += 1
        return TransportError(message)

    async def _connect(self, source: str, target: str) -> MemoryStream:
        delay = self._delays.get(source)
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        if source in self._crashed:
            raise self._refuse(f"{source} is crashed and cannot connect")
        if self._dropped(source):
            raise self._refuse(f"connection from {source} to {target} dropped (fault injection)")
        if self._cut(source, target):
            raise self._refuse(f"network partition between {source} and {target}")
        listener = self._listeners.get(target)
        if listener is None:
            raise self._refuse(f"connection refused: {target} is not serving")
        conn = _Connection(self, source, target, listener.token)
        self._connections.add(conn)
        self.stats.connections_opened += 1
        self.stats.connections_by_node[source] += 1
        listener.nursery.start_soon(self._run_handler, listener.handler, conn.server_end)
        return conn.client_end

    async def _run_handler(self, handler: StreamHandler, stream: MemoryStream) -> None:
        try:
            await handler(stream)
        except Exception:
            log.exception("connection handler failed on %s", stream.local)
            await stream.aclose()

    def _listen(self, node_id: str, nursery: trio.Nursery, handler: StreamHandler) -> object:
        if node_id in self._listeners:
            raise RuntimeError(f"{node_id} is already serving on this network")
        token = object()
        self._crashed.discard(node_id)
        self._listeners[node_id] = _Listener(nursery, handler, token)
        return token

    def _unlisten(self, node_id: str, token: object) -> None:
        listener = self._listeners.get(node_id)
        if listener is not None and listener.token is token:
            del self._listeners[node_id]
        for conn in list(self._connections):
            if conn.serve_token is token:
                conn.break_(f"node {node_id} stopped serving")

    def _closed_end(self, conn: _Connection) -> None:
        if conn.to_server.eof and conn.to_client.eof:
            self._connections.discard(conn)

    async def _before_send(self, stream: MemoryStream) -> None:
        delay = self._delays.get(stream.local)
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        if self._dropped(stream.local):
            stream._conn.break_(f"send from {stream.local} dropped (fault injection)")
            self._connections.discard(stream._conn)

    def _pick(self, node_id: str, length: int) -> int | None:
        """Where to flip a byte in a body chunk of ``length`` bytes ``node_id`` sends."""
        if not self._corrupt.get(node_id):
            return None
        self._corrupt[node_id] -= 1
        self.stats.corrupted_chunks += 1
        return self.random.randrange(length)


# Closing note: over 400 lines on purpose: the stream, the transport and the network's fault
# controls share their private state and read best side by side.
