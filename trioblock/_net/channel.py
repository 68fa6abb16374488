"""A framed channel: a :class:`~trioblock._net.codec.FrameCodec` driven over a Trio stream.

Rules kept here:

- This is the only place the network layer touches a stream. Stream failures
  (``trio.BrokenResourceError``, ``trio.ClosedResourceError``, ``OSError``) become
  :class:`~trioblock.errors.TransportError`, and so does input that ends in the middle of
  a frame or body (the peer went away mid-transfer: a lost connection, not a protocol
  violation). Protocol violations by the peer come out of the codec as
  :class:`~trioblock.errors.ProtocolError`.
- A broken TLS stream is reported with its TLS cause: a peer that refused our
  certificate (with TLS 1.3 that shows only on the first read after the handshake) is
  named as such, not as a bare broken connection.
- A message and the body it announces go out with few ``send_all`` calls
  (:meth:`Channel.send_with_body`): frames are gathered into writes of about one chunk.
  Nothing relies on how frames are grouped into writes.
- A channel does not time out by itself; callers put deadlines around what they do.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import trio

from ..errors import ProtocolError, TransportError
from .codec import DEFAULT_MAX_BODY_SIZE, MAX_CHUNK_SIZE, Event, FrameCodec, NeedData
from .messages import Message

__all__ = ["RECEIVE_SIZE", "WRITE_SIZE", "Channel", "describe_broken", "iter_body_chunks"]

#: Bytes asked of the stream per ``receive_some`` call.
RECEIVE_SIZE = 256 * 1024
#: Frames are gathered into one ``send_all`` until they reach this many bytes.
WRITE_SIZE = MAX_CHUNK_SIZE

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def iter_body_chunks(payload: bytes, size: int = MAX_CHUNK_SIZE) -> Iterator[memoryview]:
    """Split a body into chunks of at most ``size`` bytes, without copying."""
    view = memoryview(payload)
    for offset in range(0, len(view), size):
        yield view[offset : offset + size]


def describe_broken(exc: BaseException) -> str:
    """Why a stream broke, in words: the TLS reason when TLS was the cause."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {cause.verify_message or cause.reason}"
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
        reason = str(cause.reason or cause)
        upper = reason.upper()
        if "ALERT" in upper and ("CERTIFICATE" in upper or "UNKNOWN_CA" in upper):
            return f"TLS handshake refused by the peer: it rejected our certificate ({reason})"
        return f"TLS error: {reason}"
    return repr(exc)


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
        return TransportError(f"connection to {self.peer} broke: {describe_broken(exc)}")

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            raise self._broken(exc) from exc

    async def send_message(self, message: Message) -> None:
        """Send one message frame."""
        await self._send(self.codec.send_message(message))

    async def send_body(self, payload: bytes) -> None:
        """Send a whole body (the message announcing it was sent): chunks, then the end."""
        await self._send_frames([], payload)

    async def send_with_body(self, message: Message, payload: bytes) -> None:
        """Send ``message`` and the body it announces, in as few writes as is simple."""
        await self._send_frames([self.codec.send_message(message)], payload)

    async def _send_frames(self, pending: list[bytes], payload: bytes) -> None:
        size = sum(len(frame) for frame in pending)
        for chunk in iter_body_chunks(payload):
            if size + len(chunk) > WRITE_SIZE and pending:
                await self._send(b"".join(pending))
                pending, size = [], 0
            frame = self.codec.send_body_chunk(chunk)
            pending.append(frame)
            size += len(frame)
        pending.append(self.codec.send_body_end())
        await self._send(b"".join(pending) if len(pending) > 1 else pending[0])

    async def receive_event(self) -> Event:
        """The next event from the peer; ``ConnectionClosed`` once it has closed cleanly."""
        while True:
            try:
                event = self.codec.next_event()
            except ProtocolError as exc:
                if self.codec.truncated:
                    raise TransportError(
                        f"connection to {self.peer} was lost in the middle of a transfer"
                    ) from exc
                raise
            if not isinstance(event, NeedData):
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS as exc:
                raise self._broken(exc) from exc
            self.codec.receive_data(data)

    async def aclose(self) -> None:
        """Close the stream at once (cancellation-safe)."""
        await trio.aclose_forcefully(self.stream)
