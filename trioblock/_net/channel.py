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
- A message and the body it announces go out in one write when they are small (joined,
  at most :data:`JOIN_LIMIT` bytes), and otherwise without copying the body: over a TCP
  socket, the frames' headers and the body's chunks are handed to ``sendmsg`` together
  (one system call when the socket takes it all); over other streams (TLS, in-memory
  test streams), small frames are joined into one write and each large chunk is written
  as it is. Nothing relies on how frames are grouped into writes.
- While an answer is awaited (something was sent since the last read), a TCP channel
  waits for the socket to become readable before reading, instead of trying a read that
  would find nothing.
- A channel does not time out by itself; callers put deadlines around what they do.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence

import trio

from ..errors import ProtocolError, TransportError
from .codec import DEFAULT_MAX_BODY_SIZE, MAX_CHUNK_SIZE, Event, FrameCodec, NeedData
from .messages import Message

__all__ = ["JOIN_LIMIT", "RECEIVE_SIZE", "Channel", "describe_broken", "iter_body_chunks"]

#: Bytes asked of the stream per ``receive_some`` call.
RECEIVE_SIZE = 256 * 1024
#: Over a stream without vectored writes, buffers up to this size are joined into one
#: write (copying them costs less than a write of their own); larger ones go alone.
JOIN_LIMIT = 64 * 1024
#: Most buffers handed to one ``sendmsg`` call (well under any system's IOV_MAX).
MAX_IOVEC = 256

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
        # Set by a send, cleared by the next read: the peer has not answered yet, so a
        # read attempted at once would only find the socket empty.
        self._sent_since_read = False

    def _broken(self, exc: BaseException) -> TransportError:
        return TransportError(f"connection to {self.peer} broke: {describe_broken(exc)}")

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            raise self._broken(exc) from exc
        self._sent_since_read = True

    async def _send_buffers(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write ``buffers`` in order, copying none of the large ones."""
        try:
            await self._write_buffers(buffers)
        except _STREAM_ERRORS as exc:
            raise self._broken(exc) from exc
        self._sent_since_read = True

    async def _write_buffers(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        if sum(len(buffer) for buffer in buffers) <= JOIN_LIMIT:
            await self.stream.send_all(b"".join(buffers))
        elif isinstance(self.stream, trio.SocketStream):
            await _sendmsg_all(self.stream.socket, buffers)
        else:
            pending: list[bytes | bytearray | memoryview] = []
            size = 0
            for buffer in buffers:
                if pending and size + len(buffer) > JOIN_LIMIT:
                    await self.stream.send_all(b"".join(pending))
                    pending, size = [], 0
                if len(buffer) > JOIN_LIMIT:
                    await self.stream.send_all(buffer)
                    continue
                pending.append(buffer)
                size += len(buffer)
            if pending:
                await self.stream.send_all(b"".join(pending))

    async def send_message(self, message: Message) -> None:
        """Send one message frame."""
        await self._send(self.codec.send_message(message))

    async def send_with_body(self, message: Message, payload: bytes) -> None:
        """Send ``message`` and the body it announces, in as few writes as is simple."""
        await self._send_frames([self.codec.send_message(message)], payload)

    async def _send_frames(self, first: list[bytes], payload: bytes) -> None:
        buffers: list[bytes | bytearray | memoryview] = list(first)
        for chunk in iter_body_chunks(payload):
            buffers.extend(self.codec.body_chunk_parts(chunk))
        buffers.append(self.codec.send_body_end())
        await self._send_buffers(buffers)

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
                if self._sent_since_read and isinstance(self.stream, trio.SocketStream):
                    # Waiting for an answer: wait until it arrives rather than try a
                    # read that would find nothing first (a system call and an exception
                    # for every exchange).
                    await trio.lowlevel.wait_readable(self.stream.socket)
                self._sent_since_read = False
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS as exc:
                raise self._broken(exc) from exc
            self.codec.receive_data(data)

    async def aclose(self) -> None:
        """Close the stream at once (cancellation-safe)."""
        await trio.aclose_forcefully(self.stream)


async def _sendmsg_all(
    sock: trio.socket.SocketType, buffers: Sequence[bytes | bytearray | memoryview]
) -> None:
    """``sendmsg`` until every byte of ``buffers`` is written (a vectored ``send_all``)."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while views:
        sent = await sock.sendmsg(views[:MAX_IOVEC])
        while sent:
            if sent >= views[0].nbytes:
                sent -= views[0].nbytes
                del views[0]
            else:
                views[0] = views[0][sent:]
                sent = 0
