"""Following trioblock's frame stream from the outside, for fault injection in tests.

:class:`FrameTracker` reads the bytes of one direction of a connection as a transport
sees them (any grouping into writes) and can alter the payload of chosen body-chunk
frames. It knows only the frame header (``length:u32be kind:u8``), nothing of messages.
"""

from __future__ import annotations

from collections.abc import Callable

from .._net.codec import FrameKind

__all__ = ["FrameTracker"]

_FRAME_HEADER = 5


class FrameTracker:
    """Follows one direction of trioblock's frame stream (``length:u32be kind:u8 payload``).

    :meth:`process` takes the bytes of each write in order and returns them, with one byte
    flipped in each body-chunk frame that ``pick`` (called once per non-empty body chunk,
    with the payload length) answers with an offset. Work is per frame, not per byte.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        #: Payload bytes of the current frame still to come.
        self._remaining = 0
        #: Offset, counted in ``_remaining`` terms, of the byte to flip in this frame.
        self._flip_at: int | None = None

    def process(self, data: bytes, pick: Callable[[int], int | None]) -> bytes:
        """``data``, with the chosen bytes flipped."""
        out: bytearray | None = None
        pos = 0
        while pos < len(data):
            if self._remaining == 0:
                take = min(_FRAME_HEADER - len(self._header), len(data) - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) == _FRAME_HEADER:
                    length = int.from_bytes(self._header[:4], "big")
                    kind = self._header[4]
                    self._header.clear()
                    self._remaining = length
                    self._flip_at = None
                    if kind == FrameKind.BODY_CHUNK and length:
                        offset = pick(length)
                        if offset is not None:
                            self._flip_at = length - offset  # as a count of bytes to come
                continue
            take = min(self._remaining, len(data) - pos)
            if self._flip_at is not None and self._remaining - take < self._flip_at:
                index = pos + (self._remaining - self._flip_at)
                if out is None:
                    out = bytearray(data)
                out[index] ^= 0xFF
                self._flip_at = None
            self._remaining -= take
            pos += take
        return data if out is None else bytes(out)
