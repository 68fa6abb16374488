"""Send one thing to several nodes at once and return at a quorum.

The calls that have not finished when the quorum is reached (or can no longer be
reached) go on in the node's nursery: the caller gets its answer as soon as it is
known, and every node is still sent the update. Each node's failure is kept for the
``QuorumError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from ..errors import QuorumError

log = logging.getLogger("trioblock.node")


async def call_quorum(
    nursery: trio.Nursery,
    targets: list[str],
    quorum: int,
    call: Callable[[str], Awaitable[object]],
    *,
    what: str,
    on_all_done: Callable[[], None] | None = None,
) -> int:
    """Run ``call(node)`` for every target in ``nursery``; return successes at quorum.

    Raises :class:`QuorumError` (with each failed node's cause) as soon as fewer than
    ``quorum`` can still succeed. ``on_all_done`` runs once every call has finished,
    whatever the caller is doing by then.
    """
    done = trio.Event()
    successes = 0
    pending = len(targets)
    failures: dict[str, BaseException] = {}

    async def one(node: str) -> None:
        nonlocal successes, pending
        try:
            await call(node)
        except Exception as exc:  # recorded per node in the QuorumError
            failures[node] = exc
            log.debug("%s to %s failed: %r", what, node, exc)
        else:
            successes += 1
        finally:
            pending -= 1
            if successes >= quorum or successes + pending < quorum:
                done.set()
            if pending == 0 and on_all_done is not None:
                on_all_done()

    if not targets:
        raise QuorumError(f"{what}: no node to send to", quorum=quorum, successes=0, errors={})
    for index, node in enumerate(targets):
        try:
            nursery.start_soon(one, node)
        except RuntimeError as exc:  # the node is closing: these sends never start
            for unsent in targets[index:]:
                failures[unsent] = exc
            pending -= len(targets) - index
            done.set()
            if pending == 0 and on_all_done is not None:
                on_all_done()
            break
    await done.wait()
    if successes < quorum:
        raise QuorumError(
            f"{what} could not be written to a quorum",
            quorum=quorum,
            successes=successes,
            errors=dict(failures),
        )
    return successes


__all__ = ["call_quorum"]
