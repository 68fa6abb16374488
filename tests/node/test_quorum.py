"""call_quorum: answers at the quorum, and gives back what it holds whatever happens."""

from __future__ import annotations

import pytest
import trio

from trioblock import QuorumError
from trioblock._node.quorum import call_quorum


async def test_returns_at_the_quorum_and_finishes_the_rest_in_the_nursery(
    autojump_clock,
) -> None:
    done: list[str] = []
    released = trio.Event()

    async def call(node: str) -> None:
        await trio.sleep({"a": 1, "b": 2, "c": 30}[node])
        done.append(node)

    async with trio.open_nursery() as nursery:
        ok = await call_quorum(
            nursery, ["a", "b", "c"], 2, call, what="x", on_all_done=released.set
        )
        assert ok == 2 and done == ["a", "b"] and not released.is_set()
    assert done == ["a", "b", "c"] and released.is_set()


async def test_a_closed_nursery_is_a_quorum_error_and_releases_its_hold() -> None:
    """Sends that cannot start (the node is closing) count as failures, and the
    caller's hold (byte budget, send slots) is given back."""
    released = trio.Event()
    async with trio.open_nursery() as closed:
        pass

    async def call(node: str) -> None:
        raise AssertionError("never started")

    with pytest.raises(QuorumError) as info:
        await call_quorum(closed, ["a", "b"], 1, call, what="x", on_all_done=released.set)
    assert set(info.value.errors) == {"a", "b"}
    assert released.is_set()
