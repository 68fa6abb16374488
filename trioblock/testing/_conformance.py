"""``check_transport``: a conformance suite for implementations of ``Transport``.

In the spirit of ``trio.testing.check_two_way_stream``: anyone plugging their own
transport into trioblock runs it against theirs; trioblock runs it against
``MemoryNetwork`` and ``TcpTransport`` (plain and TLS).

Rules kept here:

- Each check gets a fresh pair from ``make_pair`` and runs under a deadline
  (``check_timeout``), so a transport that hangs fails with an ``AssertionError`` naming the
  check instead of hanging the suite.
- Only the public contract of ``Transport`` is used: ``connect`` and ``serve``.
- Transports doing real I/O must be checked under a real clock: an autojumping
  ``MockClock`` would fire the deadlines while sockets are busy.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeAlias

import trio

from .._net.transport import StreamHandler, Transport
from ..errors import TransportError

__all__ = ["TransportPair", "check_transport"]

#: ``(transport_a, transport_b, id_a, id_b)``: ``a`` can connect to ``b`` while it serves.
TransportPair: TypeAlias = tuple[Transport, Transport, str, str]
MakePair: TypeAlias = Callable[
    [], AbstractAsyncContextManager[TransportPair] | Awaitable[TransportPair]
]

#: Write sizes used to check ordering and framing independence (small, odd, large).
WRITE_SIZES = (1, 2, 3, 100, 4096, 65_537, 1 << 20, 7, 0, 250_000)


def _pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def _echo(stream: trio.abc.Stream) -> None:
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            await stream.send_all(data)


async def _receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise AssertionError(f"end of stream after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def _exchange(stream: trio.abc.Stream, seed: int) -> None:
    """Write a series of payloads and check the echo comes back complete and in order."""
    writes = [_pattern(size, seed + i) for i, size in enumerate(WRITE_SIZES)]
    expected = b"".join(writes)
    received = b""

    async def reader() -> None:
        nonlocal received
        received = await _receive_exactly(stream, len(expected))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for payload in writes:
            if payload:
                await stream.send_all(payload)
    assert received == expected, "bytes were reordered, lost or altered in transit"


@asynccontextmanager
async def _serving(transport: Transport, handler: StreamHandler) -> AsyncIterator[trio.CancelScope]:
    """Serve ``handler`` on ``transport``; yield the scope that stops serving."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await transport.serve(handler, task_status=task_status)

        await nursery.start(serve)
        yield scope
        nursery.cancel_scope.cancel()


async def check_serve_reports_started(pair: TransportPair) -> None:
    """``serve`` calls ``task_status.started()`` and stops when cancelled."""
    _, b, _, _ = pair
    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve, _echo)
        nursery.cancel_scope.cancel()


async def check_connect_reaches_handler(pair: TransportPair) -> None:
    """A connection made by ``a`` reaches ``b``'s handler with a usable stream."""
    a, b, _, id_b = pair
    reached = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        reached.set()
        await _echo(stream)

    async with _serving(b, handler):
        stream = await a.connect(id_b)
        async with stream:
            await reached.wait()
            await stream.send_all(b"ping")
            assert await _receive_exactly(stream, 4) == b"ping"


async def check_bytes_flow_both_ways(pair: TransportPair) -> None:
    """Large and small writes arrive complete and in order, in both directions."""
    a, b, _, id_b = pair
    async with _serving(b, _echo):
        stream = await a.connect(id_b)
        async with stream:
            await _exchange(stream, seed=1)


async def check_close_propagates_eof(pair: TransportPair) -> None:
    """Closing one end makes the other read the remaining data, then ``b""``."""
    a, b, _, id_b = pair
    got_from_client: list[bytes] = []
    client_closed = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        async with stream:
            got_from_client.append(await _receive_exactly(stream, 5))
            got_from_client.append(bytes(await stream.receive_some(100)))
            client_closed.set()

    async with _serving(b, handler):
        stream = await a.connect(id_b)
        await stream.send_all(b"last!")
        await stream.aclose()
        await client_closed.wait()
    assert got_from_client == [b"last!", b""], f"server saw {got_from_client!r}"

    async def closing_handler(stream: trio.abc.Stream) -> None:
        async with stream:
            await stream.send_all(b"bye")

    async with _serving(b, closing_handler):
        stream = await a.connect(id_b)
        async with stream:
            assert await _receive_exactly(stream, 3) == b"bye"
            assert await stream.receive_some(100) == b"", "no EOF after the server closed"


async def check_connect_unknown_node(pair: TransportPair) -> None:
    """Connecting to a node id nobody has raises ``TransportError``."""
    a, b, _, _ = pair
    async with _serving(b, _echo):
        try:
            stream = await a.connect("no-such-node.conformance")
        except TransportError:
            return
        await stream.aclose()
        raise AssertionError("connect to an unknown node did not raise TransportError")


async def check_cancelled_serve_refuses(pair: TransportPair) -> None:
    """Once ``serve`` is cancelled, ``connect`` fails; serving again works (a restart)."""
    a, b, _, id_b = pair
    async with _serving(b, _echo) as scope:
        stream = await a.connect(id_b)
        await stream.aclose()
        scope.cancel()
    try:
        stream = await a.connect(id_b)
    except TransportError:
        pass
    else:
        await stream.aclose()
        raise AssertionError("connect succeeded although the node stopped serving")
    async with _serving(b, _echo):
        stream = await a.connect(id_b)
        async with stream:
            await stream.send_all(b"again")
            assert await _receive_exactly(stream, 5) == b"again"


async def check_concurrent_connections_independent(pair: TransportPair) -> None:
    """Several connections at once carry their own bytes; closing one spares the others."""
    a, b, _, id_b = pair
    async with _serving(b, _echo):
        streams = [await a.connect(id_b) for _ in range(3)]
        try:
            async with trio.open_nursery() as nursery:
                for i, stream in enumerate(streams):
                    nursery.start_soon(_exchange, stream, 10 + i)
            await streams[0].aclose()
            for i, stream in enumerate(streams[1:], start=1):
                message = f"still here {i}".encode()
                await stream.send_all(message)
                assert await _receive_exactly(stream, len(message)) == message
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)


CHECKS: tuple[Callable[[TransportPair], Awaitable[None]], ...] = (
    check_serve_reports_started,
    check_connect_reaches_handler,
    check_bytes_flow_both_ways,
    check_close_propagates_eof,
    check_connect_unknown_node,
    check_cancelled_serve_refuses,
    check_concurrent_connections_independent,
)


@asynccontextmanager
async def _open_pair(make_pair: MakePair) -> AsyncIterator[TransportPair]:
    made = make_pair()
    if isinstance(made, AbstractAsyncContextManager):
        async with made as pair:
            yield pair
    else:
        yield await made


async def check_transport(make_pair: MakePair, *, check_timeout: float = 30.0) -> None:
    """Check that a transport keeps the ``Transport`` contract; ``AssertionError`` if not.

    ``make_pair`` is called once per check and returns (or, as an async context manager,
    yields) ``(transport_a, transport_b, id_a, id_b)`` such that ``a`` can connect to
    ``b`` by ``id_b`` whenever ``b`` is serving. A transport whose address is only known
    once bound can bind in ``make_pair`` (``TcpTransport.bind`` does). Each check must
    finish within ``check_timeout`` seconds.
    """
    for check in CHECKS:
        async with _open_pair(make_pair) as pair:
            a, b = pair[0], pair[1]
            for t in (a, b):
                if not isinstance(t, Transport):
                    raise AssertionError(f"{t!r} does not implement the Transport protocol")
            try:
                with trio.fail_after(check_timeout):
                    await check(pair)
            except trio.TooSlowError:
                msg = f"{check.__name__}: timed out after {check_timeout}s"
                raise AssertionError(msg) from None
            except AssertionError as exc:
                raise AssertionError(f"{check.__name__}: {exc}") from exc
            except Exception as exc:  # any other escape is a contract violation too
                raise AssertionError(f"{check.__name__}: unexpected {exc!r}") from exc
