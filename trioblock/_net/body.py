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

__all__ = ["BodyReader"]


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
