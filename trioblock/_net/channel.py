"""A framed channel: a :class:`~trioblock._net.codec.FrameCodec` driven over a Trio stream.

Rules kept here:

- This is the only place the network layer touches a stream. Stream failures
  (``trio.BrokenResourceError``, ``trio.ClosedResourceError``, ``OSError``) become
  :class:`~trioblock.errors.TransportError`; protocol violations by the peer come out of the
  codec as :class:`~trioblock.errors.ProtocolError`.
- Each frame is written with its own ``send_all`` call, body chunks included: fault
  injection in ``trioblock.testing.MemoryNetwork`` recognises body chunks by the frame-kind
  byte at the start of a write.
- A channel does not time out by itself; callers put deadlines around what they do.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio

from ..errors import TransportError
from .codec import DEFAULT_MAX_BODY_SIZE, MAX_CHUNK_SIZE, Event, FrameCodec, NeedData
from .messages import Message

__all__ = ["RECEIVE_SIZE", "Channel", "iter_body_chunks"]

#: Bytes asked of the stream per ``receive_some`` call.
RECEIVE_SIZE = 256 * 1024


def iter_body_chunks(payload: bytes, size: int = MAX_CHUNK_SIZE) -> Iterator[memoryview]:
    """Split a body into chunks of at most ``size`` bytes, without copying."""
    view = memoryview(payload)
    for offset in range(0, len(view), size):
        yield view[offset : offset + size]


class Channel:
    """Sends messages and bodies, receives events, over one stream.

    ``peer`` names the other side for error messages once it is known.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        peer: str = "?",
    ) -> None:
        self.stream = stream
        self.codec = FrameCodec(max_body_size=max_body_size)
        self.peer = peer

    def _broken(self, exc: BaseException) -> TransportError:
        return TransportError(f"connection to {self.peer} broke: {exc!r}")

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._broken(exc) from exc

    async def send_raw(self, frame: bytes) -> None:
        """Send a frame already produced by ``self.codec``."""
        await self._send(frame)

    async def send_message(self, message: Message) -> None:
        """Send one message frame."""
        await self._send(self.codec.send_message(message))

    async def send_body_chunk(self, data: bytes | bytearray | memoryview) -> None:
        """Send one body-chunk frame (at most ``MAX_CHUNK_SIZE`` bytes)."""
        await self._send(self.codec.send_body_chunk(data))

    async def send_body_end(self) -> None:
        """Send the frame ending the current body."""
        await self._send(self.codec.send_body_end())

    async def send_body(self, payload: bytes) -> None:
        """Send a whole body: its chunks, one write each, then the end frame."""
        for chunk in iter_body_chunks(payload):
            await self.send_body_chunk(chunk)
        await self.send_body_end()

    async def receive_event(self) -> Event:
        """The next event from the peer; ``ConnectionClosed`` once it has closed cleanly."""
        while True:
            event = self.codec.next_event()
            if not isinstance(event, NeedData):
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise self._broken(exc) from exc
            self.codec.receive_data(data)

    async def aclose(self) -> None:
        """Close the stream at once (cancellation-safe)."""
        await trio.aclose_forcefully(self.stream)
