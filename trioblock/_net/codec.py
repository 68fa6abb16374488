"""Framing of trioblock's wire protocol: bytes in, events out, never a socket (sans-IO).

A connection carries *frames*::

    frame   = length:u32be  kind:u8  payload[length]
    kind    = 0x01 MESSAGE     payload is one CBOR map (see ``messages``)
            | 0x02 BODY_CHUNK  payload is the next piece of a streamed body
            | 0x03 BODY_END    payload is empty; the body is complete

Rules kept here:

- Sizes are checked from the five header bytes alone, before any payload is buffered: a
  message frame is at most ``max_message_size`` (64 KiB; raised to 1 MiB by the RPC
  layer once the peer is authenticated), a body chunk at most
  ``max_chunk_size`` (1 MiB), a whole body at most ``max_body_size`` (given by the caller).
- Bodies follow only the messages that announce one (``messages.has_body``). A body chunk
  or body end outside a body, or a message inside one, is a protocol violation; so is an
  unknown frame kind, bad CBOR, a CBOR value that is not a valid message, trailing bytes
  after the CBOR value, and end of input in the middle of a frame or a body.
- Every violation by the peer raises :class:`~trioblock.errors.ProtocolError` and nothing
  else; after one, the decoder refuses to go on (the connection is done). End of input in
  the middle of a frame or body is one too, flagged :attr:`FrameCodec.truncated` so that
  the layer holding the stream can report it as the lost connection it usually is. Misuse by the
  local side (sending a chunk outside a body, a message too big) raises ``ValueError``
  or ``RuntimeError`` instead: whose fault it was is part of the type.
- Decoding is linear in the bytes received, however they are split: input is appended to
  one ``bytearray`` read through an offset, and consumed bytes are dropped only once they
  make up at least half of the buffer, so each byte is copied a bounded number of times.
  A frame of at least :data:`ASSEMBLE_MIN` bytes that is not yet complete is not grown
  in that buffer: the pieces received for it are kept as they come and joined once, so
  a large body chunk is copied once between the socket and its event, however it was
  split.
- Sending copies nothing large: :meth:`FrameCodec.body_chunk_parts` gives a chunk's
  header and its data as separate buffers, for a vectored write.
- CBOR tags are refused outright (no dates, bignums, regexps or shared references from a
  peer), duplicate map keys and non-string map keys are refused, nesting is bounded.
"""

from __future__ import annotations

import enum
import io
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeAlias

import cbor2

from ..errors import ProtocolError
from .messages import Message, has_body, message_from_map, message_to_map

__all__ = [
    "ASSEMBLE_MIN",
    "DEFAULT_MAX_BODY_SIZE",
    "MAX_AUTHENTICATED_MESSAGE_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "BodyChunk",
    "BodyEnd",
    "ConnectionClosed",
    "Event",
    "FrameCodec",
    "FrameKind",
    "NeedData",
    "decode_message",
    "encode_message",
]

#: Largest payload of a message frame (the limit before authentication).
MAX_MESSAGE_SIZE: Final = 64 * 1024
#: Largest payload of a message frame once the handshake has authenticated the peer:
#: room for the largest reference messages (4096 entries).
MAX_AUTHENTICATED_MESSAGE_SIZE: Final = 1024 * 1024
#: Largest payload of a body-chunk frame.
MAX_CHUNK_SIZE: Final = 1024 * 1024
#: Default bound on a whole body: the largest block plus zstd's worst-case overhead.
DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024 * 1024 + 1024 * 1024
#: Deepest CBOR nesting accepted in a message.
MAX_CBOR_DEPTH: Final = 40

#: Frames at least this large are assembled from the received pieces (one join) rather
#: than grown in the decoder's buffer.
ASSEMBLE_MIN: Final = 64 * 1024

_HEADER: Final = struct.Struct(">IB")


class FrameKind(enum.IntEnum):
    """The byte after a frame's length, saying what its payload is."""

    MESSAGE = 1
    BODY_CHUNK = 2
    BODY_END = 3


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """The next piece of the body announced by the previous message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The body announced by the previous message is complete."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection cleanly, between two exchanges."""


class NeedData:
    """Type of :data:`NEED_DATA`: no complete event is buffered yet."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`FrameCodec.next_event` when more bytes are needed.
NEED_DATA: Final = NeedData()

Event: TypeAlias = Message | BodyChunk | BodyEnd | ConnectionClosed


class _RefuseEveryTag(Mapping[int, Any]):
    """A ``semantic_decoders`` mapping that claims every tag and refuses it.

    cbor2 consults this mapping before its built-in decoders, so no tagged value from a
    peer is ever turned into a Python object.
    """

    def __getitem__(self, tag: int) -> Any:
        return self._refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0

    @staticmethod
    def _refuse(*args: object) -> NoReturn:
        raise ValueError("CBOR tags are not allowed")


_NO_TAGS: Final = _RefuseEveryTag()


def encode_message(message: Message) -> bytes:
    """The CBOR payload of a message frame."""
    return cbor2.dumps(message_to_map(message))


def decode_message(payload: bytes) -> Message:
    """Parse the CBOR payload of a message frame; ``ProtocolError`` on anything malformed."""
    fp = io.BytesIO(payload)
    try:
        value = cbor2.CBORDecoder(
            fp,
            semantic_decoders=_NO_TAGS,
            max_depth=MAX_CBOR_DEPTH,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        ).decode()
    # This is the one place untrusted bytes meet a third-party parser: whatever it raises,
    # the peer sent something we cannot read, so it all becomes ProtocolError.
    except Exception as exc:
        raise ProtocolError(f"malformed CBOR in message frame: {exc}") from exc
    if fp.tell() != len(payload):
        raise ProtocolError("trailing bytes after the CBOR value in a message frame")
    return message_from_map(value)


def _frame(kind: FrameKind, payload: bytes | bytearray | memoryview) -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


class FrameCodec:
    """One side of one connection: turns received bytes into events and messages into bytes.

    Receiving: feed bytes with :meth:`receive_data` (``b""`` means end of input) and pull
    events with :meth:`next_event` until it returns :data:`NEED_DATA`. Events are
    messages, :class:`BodyChunk`, :class:`BodyEnd` and, at a clean end of input,
    :class:`ConnectionClosed`.

    Sending: :meth:`send_message`, :meth:`send_body_chunk` and :meth:`send_body_end` return
    the bytes to write; a message that announces a body must be followed by its chunks and
    a body end before the next message.
    """

    def __init__(
        self,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_chunk_size: int = MAX_CHUNK_SIZE,
    ) -> None:
        if max_body_size < 0 or max_message_size <= 0 or max_chunk_size <= 0:
            raise ValueError("frame and body size limits must be positive")
        self.max_body_size = max_body_size
        self.max_message_size = max_message_size
        self.max_chunk_size = max_chunk_size
        self._buf = bytearray()
        self._offset = 0
        # A large frame being assembled: its kind, the pieces of its payload received so
        # far, and how many bytes of it are still missing (0 when none is).
        self._parts: list[bytes | memoryview] = []
        self._part_kind = 0
        self._missing = 0
        self._eof = False
        self._failed: ProtocolError | None = None
        self._truncated = False
        self._in_body = False
        self._body_size = 0
        self._sending_body = False

    # -- receiving ------------------------------------------------------------------

    @property
    def in_body(self) -> bool:
        """Whether a received body has been announced and not yet ended."""
        return self._in_body

    @property
    def failed(self) -> bool:
        """Whether the peer has broken the protocol (the connection must be closed)."""
        return self._failed is not None

    @property
    def truncated(self) -> bool:
        """Whether the input ended in the middle of a frame or body (a lost connection)."""
        return self._truncated

    @property
    def at_eof(self) -> bool:
        """Whether the end of input has been received."""
        return self._eof

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; an empty ``data`` signals end of input."""
        if self._eof:
            if data:
                raise RuntimeError("received data after end of input")
            return
        if not data:
            self._eof = True
            return
        if self._missing:
            take = min(len(data), self._missing)
            if take == len(data) and isinstance(data, bytes):
                self._parts.append(data)
            elif isinstance(data, bytes):
                # A view keeps the (immutable) received bytes without copying them.
                self._parts.append(memoryview(data)[:take])
            else:
                self._parts.append(bytes(data[:take]))
            self._missing -= take
            if take == len(data):
                return
            data = memoryview(data)[take:]
        self._buf += data

    def _fail(self, reason: str) -> NoReturn:
        self._failed = ProtocolError(reason)
        raise self._failed

    def next_event(self) -> Event | NeedData:
        """The next complete event, or :data:`NEED_DATA`."""
        if self._failed is not None:
            raise ProtocolError(f"connection already failed: {self._failed}")
        if self._parts:
            if self._missing:
                if self._eof:
                    self._truncated = True
                    self._fail("connection closed in the middle of a frame")
                return NEED_DATA
            parts, self._parts = self._parts, []
            return self._event(self._part_kind, b"".join(parts))
        available = len(self._buf) - self._offset
        if available < _HEADER.size:
            if self._eof:
                if available or self._in_body:
                    self._truncated = True
                    self._fail("connection closed in the middle of a frame or body")
                return ConnectionClosed()
            return NEED_DATA
        length, kind = _HEADER.unpack_from(self._buf, self._offset)
        self._check_header(length, kind)
        start = self._offset + _HEADER.size
        end = start + length
        if len(self._buf) < end:
            if self._eof:
                self._truncated = True
                self._fail("connection closed in the middle of a frame")
            if length >= ASSEMBLE_MIN:
                # Take what has arrived of the payload out of the buffer; the rest is
                # collected by receive_data as it comes.
                with memoryview(self._buf) as view:
                    self._parts = [bytes(view[start:])]
                self._part_kind = kind
                self._missing = end - len(self._buf)
                self._buf.clear()
                self._offset = 0
            return NEED_DATA
        with memoryview(self._buf) as view:
            payload = bytes(view[start:end])
        self._offset = end
        if self._offset >= len(self._buf):
            self._buf.clear()
            self._offset = 0
        elif self._offset * 2 >= len(self._buf):
            # Dropping the consumed prefix costs at most as much as what was consumed since
            # the last time: the amortised cost per byte stays constant.
            del self._buf[: self._offset]
            self._offset = 0
        return self._event(kind, payload)

    def _check_header(self, length: int, kind: int) -> None:
        if kind == FrameKind.MESSAGE:
            if self._in_body:
                self._fail("a message frame arrived in the middle of a body")
            if length > self.max_message_size:
                self._fail(f"message frame of {length} bytes exceeds {self.max_message_size}")
        elif kind == FrameKind.BODY_CHUNK:
            if not self._in_body:
                self._fail("a body chunk arrived when no body was expected")
            if length > self.max_chunk_size:
                self._fail(f"body chunk of {length} bytes exceeds {self.max_chunk_size}")
            if self._body_size + length > self.max_body_size:
                self._fail(f"body exceeds the limit of {self.max_body_size} bytes")
        elif kind == FrameKind.BODY_END:
            if not self._in_body:
                self._fail("a body end arrived when no body was expected")
            if length:
                self._fail("a body-end frame must be empty")
        else:
            self._fail(f"unknown frame kind {kind:#04x}")

    def _event(self, kind: int, payload: bytes) -> Event:
        if kind == FrameKind.BODY_CHUNK:
            self._body_size += len(payload)
            return BodyChunk(payload)
        if kind == FrameKind.BODY_END:
            self._in_body = False
            self._body_size = 0
            return BodyEnd()
        try:
            message = decode_message(payload)
        except ProtocolError as exc:
            self._failed = exc
            raise
        if has_body(message):
            self._in_body = True
            self._body_size = 0
        return message

    # -- sending --------------------------------------------------------------------

    @property
    def sending_body(self) -> bool:
        """Whether a sent message announced a body that has not been ended yet."""
        return self._sending_body

    def send_message(self, message: Message) -> bytes:
        """The frame carrying ``message``."""
        if self._sending_body:
            raise RuntimeError("cannot send a message before ending the current body")
        payload = encode_message(message)
        if len(payload) > self.max_message_size:
            raise ValueError(
                f"message of {len(payload)} bytes exceeds the {self.max_message_size}-byte limit"
            )
        self._sending_body = has_body(message)
        return _frame(FrameKind.MESSAGE, payload)

    def send_body_chunk(self, data: bytes | bytearray | memoryview) -> bytes:
        """The frame carrying the next piece of the current body (at most ``max_chunk_size``)."""
        header, data = self.body_chunk_parts(data)
        return header + data

    def body_chunk_parts(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[bytes, bytes | bytearray | memoryview]:
        """The frame carrying the next piece of the current body, as its five header
        bytes and ``data`` itself (not copied): for a vectored write."""
        if not self._sending_body:
            raise RuntimeError("no body is being sent")
        if len(data) > self.max_chunk_size:
            raise ValueError(f"body chunk of {len(data)} bytes exceeds {self.max_chunk_size}")
        return _HEADER.pack(len(data), FrameKind.BODY_CHUNK), data

    def send_body_end(self) -> bytes:
        """The frame ending the current body."""
        if not self._sending_body:
            raise RuntimeError("no body is being sent")
        self._sending_body = False
        return _frame(FrameKind.BODY_END, b"")
