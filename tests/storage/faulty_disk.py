"""``FaultyDisk``: the real disk, with the faults and delays a test asks for.

A test double of the ``Disk`` contract (``trioblock._core.disk``), given to a store as
``BlockStore(disk=...)`` or to a node as ``Config(disk=...)``: every operation is
recorded, then delegated to the real disk unless a fault was armed for it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trioblock._storage import RealDisk


@dataclass
class Fault:
    error: BaseException
    times: int
    #: called with the operation's arguments before the error is raised (e.g. to write
    #: part of the data first)
    first: Callable[..., object] | None


@dataclass(frozen=True)
class Call:
    op: str
    args: tuple[Any, ...]
    result: Any


class FaultyDisk:
    """The real disk; ``fail(op)`` makes the next call(s) of ``op`` raise instead."""

    def __init__(self, inner: RealDisk | None = None) -> None:
        self.inner = RealDisk() if inner is None else inner
        self.calls: list[Call] = []
        #: seconds each call of an operation sleeps first (a slow disk)
        self.delay: dict[str, float] = {}
        #: called with an operation's arguments before each call of it
        self.before: dict[str, Callable[..., object]] = {}
        self._faults: dict[str, Fault] = {}

    def fail(
        self,
        op: str,
        err: int | BaseException = errno.EIO,
        *,
        times: int = 1,
        first: Callable[..., object] | None = None,
    ) -> None:
        """The next ``times`` calls of ``op`` raise ``err`` (an errno: that ``OSError``)."""
        error = OSError(err, os.strerror(err)) if isinstance(err, int) else err
        self._faults[op] = Fault(error, times, first)

    def ops(self) -> list[str]:
        return [c.op for c in self.calls]

    def __getattr__(self, op: str) -> Callable[..., Any]:
        method = getattr(self.inner, op)

        def call(*args: Any, **kwargs: Any) -> Any:
            if op in self.delay:
                time.sleep(self.delay[op])
            if op in self.before:
                self.before[op](*args)
            fault = self._faults.get(op)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                self.calls.append(Call(op, args, fault.error))
                if fault.first is not None:
                    fault.first(self.inner, *args)
                raise fault.error
            result = method(*args, **kwargs)
            self.calls.append(Call(op, args, result))
            return result

        return call


__all__ = ["Call", "FaultyDisk"]
