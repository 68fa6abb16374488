"""A nursery for context managers that run services around their caller's code.

``trio.open_nursery`` wraps everything that leaves it in an ``ExceptionGroup``, including
an exception raised by the code inside ``async with open_block_manager(...)``. A user
who writes ``except MissingBlockError`` around that block must get the
``MissingBlockError`` itself, so :func:`service_nursery` unwraps exactly that case:

- the body's own exception is re-raised as it was, even when Trio wraps a copy of it
  (Trio re-raises exception groups as new objects, so the body's error is recognised
  by its leaves, not by identity);
- a group of nothing but ``Cancelled`` propagates untouched (Trio needs it);
- a ``KeyboardInterrupt`` or ``SystemExit`` (with nothing but ``Cancelled`` beside it)
  comes out as itself, so Ctrl-C stays Ctrl-C;
- anything else — a background task failed — becomes a ``TrioblockError`` raised
  ``from`` the group, so no failure is hidden.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..errors import TrioblockError


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


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
        leaves = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if not leaves:
            raise
        if body_error is not None:
            own = {id(e) for e in _leaves(body_error)}
            if all(id(e) in own for e in leaves):
                raise body_error from None
        interrupts = [e for e in leaves if isinstance(e, KeyboardInterrupt | SystemExit)]
        if len(interrupts) == len(leaves):
            raise interrupts[0] from None
        raise TrioblockError(f"{description} failed: {group!r}") from group
