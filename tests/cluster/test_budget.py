"""The byte budget (``ram_buffer_max``): one count per block in flight, whatever the
number of peers, held until the last copy is sent."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from trioblock.testing import open_cluster


async def test_a_block_sent_to_two_peers_is_counted_once_until_the_last_send(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, write_quorum=2) as cluster:
        n0 = cluster.nodes["n0"]
        cluster.net.set_delay("n1", 1.0)
        cluster.net.set_delay("n2", 5.0)
        data = os.urandom(64 * 1024)  # incompressible: the encoding is a little larger
        seen: list[int] = []

        async def watch() -> None:
            while True:
                seen.append(n0.buffer_in_use())
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await n0.put_block(data)  # returns at quorum (n0 and n1): n2 still receiving
            await trio.sleep(0.1)
            in_flight = n0.buffer_in_use()
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
        assert len(data) <= in_flight < len(data) + 1024  # once, not once per peer
        assert max(seen) < 2 * len(data)
        assert n0.buffer_in_use() == 0


async def test_a_refused_put_gives_the_budget_back(tmp_path: Path, autojump_clock: object) -> None:
    async with open_cluster(tmp_path, n=3, ram_buffer_max=100_000) as cluster:
        n0 = cluster.nodes["n0"]
        data = b"x" * 50_000
        try:
            await n0.rpc_put_block(b"\x01" * 32, data)
        except ValueError:
            pass
        else:  # pragma: no cover
            raise AssertionError("a put under the wrong hash must be refused")
        assert n0.buffer_in_use() == 0
        for _ in range(5):  # the budget is not leaking: puts keep going through
            await n0.put_block(os.urandom(60_000))
        await trio.sleep(5)
        assert n0.buffer_in_use() == 0
