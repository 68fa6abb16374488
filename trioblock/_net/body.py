"""Reading a streamed body: the one loop both sides use.

A body follows the message that announces it (``PutBlock``, ``Admin`` / ``AdminReply``
with a body) as chunk frames and an end frame. :class:`BodyReader` yields its chunks as an
async iterator, or all of it with :meth:`BodyReader.read_all`, and remembers how reading
ended, which decides whether the connection can carry another exchange:

- ``finished``: the end frame arrived (the connection is in step);
- ``failure``: reading failed (the peer broke the protocol, stalled or vanished); the same
  exception is raised again on every later read, whatever the caller made of it;
- ``closed``: the exchange is over; reading now is the caller's mistake.

Each chunk must arrive within ``timeout`` seconds; a stall is a
:class:`~trioblock.errors.TransportError`.
"""

from __future__ import annotations

import trio

from ..errors import ProtocolError, TransportError, TrioblockError
from .channel import Channel
from .codec import BodyChunk, BodyEnd

__all__ = ["BodyParts", "BodyReader"]


class BodyReader:
    """The chunks of one incoming body on ``channel`` (see the module docstring)."""

    def __init__(self, channel: Channel, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout
        self.finished = False
        self.failure: TrioblockError | None = None
        self.closed = False

    def __aiter__(self) -> BodyReader:
        return self

    @property
    def peer(self) -> str:
        return self._channel.peer

    async def __anext__(self) -> bytes:
        if self.closed and not self.finished:
            raise TransportError("the body was read after its exchange ended")
        return await self._next()

    async def _next(self) -> bytes:
        while True:
            if self.finished:
                raise StopAsyncIteration
            if self.failure is not None:
                raise self.failure
            try:
                with trio.fail_after(self._timeout):
                    event = await self._channel.receive_event()
            except trio.TooSlowError:
                self.failure = TransportError(
                    f"{self._channel.peer} sent no body data for {self._timeout}s"
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
            # The codec lets nothing else through inside a body; refuse it all the same.
            self.failure = ProtocolError(f"unexpected {type(event).__name__} inside a body")
            raise self.failure

    async def read_all(self) -> bytes:
        """The rest of the body, whole (bounded by the channel's ``max_body_size``)."""
        return b"".join([chunk async for chunk in self])

    async def drain(self) -> None:
        """Read and discard the rest of the body, if the connection still allows it.

        Works after :attr:`closed` is set: the exchange's owner drains what its handler
        left unread.
        """
        while not self.finished and self.failure is None:
            try:
                await self._next()
            except StopAsyncIteration:
                return
            except TrioblockError:
                return


class BodyParts:
    """The parts of a body made of several concatenated pieces of known lengths (the
    blocks of a ``PutBlocks``): ``async for index, chunk in parts`` gives each chunk
    with the index of the piece it belongs to, cut at the pieces' boundaries.

    A body longer or shorter than the lengths announced is a ``ProtocolError``, kept as
    the reader's ``failure`` (the connection is finished, whatever the caller makes of it).
    An iterator object rather than an async generator: a handler that stops reading
    early (an error, a cancellation) leaves nothing for the garbage collector to close.
    """

    def __init__(self, body: BodyReader, lengths: list[int]) -> None:
        self.body = body
        self.lengths = lengths
        self._index = 0
        self._left = lengths[0] if lengths else 0
        self._view = memoryview(b"")
        self._ended = False

    def __aiter__(self) -> BodyParts:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        while not self._view:
            if self._ended:
                raise StopAsyncIteration
            try:
                chunk = await self.body.__anext__()
            except StopAsyncIteration:
                self._ended = True
                rest = self.lengths[self._index + 1 :]
                if self._left or any(rest):
                    self._fail(f"the body is shorter than the {sum(self.lengths)} bytes announced")
                raise
            self._view = memoryview(chunk)
        while self._left == 0 and self._index < len(self.lengths) - 1:
            self._index += 1
            self._left = self.lengths[self._index]
        if self._left == 0:
            self._fail(f"the body is longer than the {sum(self.lengths)} bytes announced")
        piece = self._view[: self._left]
        self._view = self._view[len(piece) :]
        self._left -= len(piece)
        return self._index, bytes(piece)

    def _fail(self, why: str) -> None:
        self.body.failure = ProtocolError(f"{self.body.peer}: {why}")
        raise self.body.failure
