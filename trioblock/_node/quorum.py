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
    groups: list[tuple[list[str], int]] | None = None,
) -> int:
    """Run ``call(node)`` for every target in ``nursery``; return successes at quorum.

    Raises :class:`QuorumError` (with each failed node's cause) as soon as fewer than
    ``quorum`` can still succeed. ``on_all_done`` runs once every call has finished,
    whatever the caller is doing by then.

    With ``groups`` (node sets, each with its own quorum: the storage nodes of every
    live layout version), ``targets`` and ``quorum`` are ignored: each node of any group
    is called once, and the call returns once every group reached its quorum (the
    successes counted in the first group), or fails as soon as one group cannot.
    """
    if groups is None:
        groups = [(targets, quorum)]
    targets = list(dict.fromkeys(n for nodes, _q in groups for n in nodes))
    quorum = groups[0][1]
    done = trio.Event()
    succeeded: set[str] = set()
    pending = len(targets)
    failures: dict[str, BaseException] = {}

    def settled() -> bool:
        reached = all(len(succeeded.intersection(nodes)) >= q for nodes, q in groups)
        hopeless = any(
            len(nodes) - sum(1 for n in nodes if n in failures) < q for nodes, q in groups
        )
        return reached or hopeless

    async def one(node: str) -> None:
        nonlocal pending
        try:
            await call(node)
        except Exception as exc:  # recorded per node in the QuorumError
            failures[node] = exc
            log.debug("%s to %s failed: %r", what, node, exc)
        else:
            succeeded.add(node)
        finally:
            pending -= 1
            if settled() or pending == 0:
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
    successes = len(succeeded.intersection(groups[0][0]))
    if not all(len(succeeded.intersection(nodes)) >= q for nodes, q in groups):
        raise QuorumError(
            f"{what} could not be written to a quorum"
            + ("" if len(groups) == 1 else " in every live layout version"),
            quorum=quorum,
            successes=successes,
            errors=dict(failures),
        )
    return successes


__all__ = ["call_quorum"]
