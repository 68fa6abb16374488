"""A nursery for context managers that run services around their caller's code.

``trio.open_nursery`` wraps everything that leaves it in an ``ExceptionGroup``, including
an exception raised by the code inside ``async with open_block_manager(...)``. A user
who writes ``except MissingBlockError`` around that block must get the
``MissingBlockError`` itself, so :func:`service_nursery` unwraps exactly that case:

- the body's own exception (alone in the group) is re-raised as it was;
- a group of nothing but ``Cancelled`` propagates untouched (Trio needs it);
- anything else — a background task failed — becomes a ``TrioblockError`` raised
  ``from`` the group, so no failure is hidden.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..errors import TrioblockError


@asynccontextmanager
async def service_nursery(description: str) -> AsyncIterator[trio.Nursery]:
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body_error = exc
                raise
    except BaseExceptionGroup as group:
        if body_error is not None:
            _matched, others = group.split(lambda e: e is body_error)
            if others is None:
                raise body_error from None
        _cancelled, others = group.split(trio.Cancelled)
        if others is None:
            raise
        raise TrioblockError(f"{description} failed: {others!r}") from group
