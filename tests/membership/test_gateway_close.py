"""Closing a gateway with nothing in flight is prompt (virtual time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from trioblock.testing import open_cluster


@pytest.mark.xfail(
    strict=True,
    reason=(
        "library regression: a gateway runs membership.run_gossip (an endless loop) in "
        "its service nursery, and closing it only sets a deadline of SHUTDOWN_GRACE on "
        "that nursery: every gateway close now takes 10 s (examples/tcp_cluster.py and "
        "examples/grow_cluster.py spend most of their time there)"
    ),
)
async def test_closing_an_idle_gateway_is_prompt(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        async with c.open_gateway() as gw:
            h = await gw.put_block(b"some data")
            assert await gw.get_block(h) == b"some data"
            await trio.sleep(1)  # the put's sends beyond the quorum are over
            leaving = trio.current_time()
        assert trio.current_time() - leaving < 1.0
