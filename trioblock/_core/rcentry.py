"""Reference counts and resync back-off: small value types with exact byte encodings.

``RcEntry`` rules (the ``block_rc`` table):

- ``Present(n)``, n > 0, is stored as ``be64(n)``;
- ``Deletable(at)`` (count fell to zero, GC delay running until ``at`` msec) is stored as
  ``be64(0) ‖ be64(at)``;
- ``Absent`` is no row at all.

incref: any state → Present(n+1). decref: Present(1) → Deletable(now + gc_delay),
Present(n) → Present(n-1), anything else unchanged. A block is *needed* unless it is
deletable; it is *deletable* when Absent or Deletable with ``now > at``.

``ErrorCounter`` (the ``resync_errors`` table) is ``be64(errors) ‖ be64(last_try)``;
after the n-th consecutive failure the next try is
``last_try + retry_delay · 2^min(n-1, 6)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_U64 = struct.Struct(">Q")
_U64X2 = struct.Struct(">QQ")

MAX_BACKOFF_POWER = 6


@dataclass(frozen=True, slots=True)
class RcEntry:
    """The reference-count state of one block on one node.

    ``count`` > 0 means Present; ``count == 0`` with ``deletable_at`` set means Deletable;
    ``count == 0`` with ``deletable_at is None`` means Absent.
    """

    count: int = 0
    deletable_at: int | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("reference count cannot be negative")
        if self.count > 0 and self.deletable_at is not None:
            raise ValueError("a referenced block has no deletion time")

    # -- constructors -------------------------------------------------------------

    @classmethod
    def absent(cls) -> RcEntry:
        return cls()

    @classmethod
    def present(cls, count: int) -> RcEntry:
        if count <= 0:
            raise ValueError("Present needs a positive count")
        return cls(count)

    @classmethod
    def deletable(cls, at_msec: int) -> RcEntry:
        return cls(0, at_msec)

    # -- predicates ---------------------------------------------------------------

    @property
    def is_absent(self) -> bool:
        return self.count == 0 and self.deletable_at is None

    @property
    def is_nonzero(self) -> bool:
        return self.count > 0

    def is_deletable(self, now_msec: int) -> bool:
        if self.count > 0:
            return False
        return self.deletable_at is None or now_msec > self.deletable_at

    # -- transitions --------------------------------------------------------------

    def incref(self) -> RcEntry:
        return RcEntry(self.count + 1)

    def decref(self, now_msec: int, gc_delay_msec: int) -> RcEntry:
        if self.count > 1:
            return RcEntry(self.count - 1)
        if self.count == 1:
            return RcEntry(0, now_msec + gc_delay_msec)
        return self

    # -- encoding -----------------------------------------------------------------

    def encode(self) -> bytes | None:
        """The ``block_rc`` value, or None when the row should not exist."""
        if self.count > 0:
            return _U64.pack(self.count)
        if self.deletable_at is not None:
            return _U64X2.pack(0, self.deletable_at)
        return None

    @classmethod
    def decode(cls, value: bytes | None) -> RcEntry:
        """Parse a ``block_rc`` value; ``ValueError`` on anything malformed."""
        if value is None:
            return cls()
        if len(value) == 8:
            (count,) = _U64.unpack(value)
            if count == 0:
                raise ValueError("rc row holds a zero count without a deletion time")
            return cls(count)
        if len(value) == 16:
            count, at = _U64X2.unpack(value)
            if count != 0:
                raise ValueError("rc row with a deletion time must have a zero count")
            return cls(0, at)
        raise ValueError(f"rc row of {len(value)} bytes (expected 8 or 16)")

    def __str__(self) -> str:
        if self.count > 0:
            return f"Present({self.count})"
        if self.deletable_at is not None:
            return f"Deletable(at={self.deletable_at})"
        return "Absent"


@dataclass(frozen=True, slots=True)
class ErrorCounter:
    """Consecutive resync failures of one block and when the last one happened."""

    errors: int
    last_try: int

    @classmethod
    def first(cls, now_msec: int) -> ErrorCounter:
        return cls(1, now_msec)

    def bump(self, now_msec: int) -> ErrorCounter:
        return ErrorCounter(self.errors + 1, now_msec)

    def delay_msec(self, retry_delay_msec: int) -> int:
        power = min(max(self.errors, 1) - 1, MAX_BACKOFF_POWER)
        return retry_delay_msec << power

    def next_try(self, retry_delay_msec: int) -> int:
        return self.last_try + self.delay_msec(retry_delay_msec)

    def encode(self) -> bytes:
        return _U64X2.pack(self.errors, self.last_try)

    @classmethod
    def decode(cls, value: bytes) -> ErrorCounter:
        if len(value) != 16:
            raise ValueError(f"error counter of {len(value)} bytes (expected 16)")
        errors, last_try = _U64X2.unpack(value)
        return cls(errors, last_try)


def queue_key(when_msec: int, hash: bytes) -> bytes:
    """The ``resync_queue`` key: ``be64(when) ‖ hash``, ordered by time then hash."""
    return _U64.pack(when_msec) + bytes(hash)


def parse_queue_key(key: bytes) -> tuple[int, bytes]:
    if len(key) != 40:
        raise ValueError(f"resync queue key of {len(key)} bytes (expected 40)")
    (when,) = _U64.unpack(key[:8])
    return when, key[8:]
