"""Membership benchmark: a 4th node joins a 3-node cluster holding N blocks.

    python benchmarks/membership.py [--quick | --full] [--blocks N] [--size BYTES]
                                    [--puts N] [--dir DIR] [--json PATH]

A 3-node cluster over ``TcpTransport`` on 127.0.0.1 (``open_cluster(...,
transport="tcp")``, replication 3, quorum 2, ``data_fsync`` on, compression level 1)
holds ``--blocks`` random blocks of ``--size`` bytes, each referenced once. Then:

- **join**: node n3 is added (``cluster.add_node``) and given a role of equal capacity
  (``apply_layout``). Timed from the apply until n3 reports itself synced to the new
  version (it holds every reference and every block copy the version gives it), until
  the old version is retired on every node, and until the change is settled (every
  surplus copy deleted: copies written less than ``--gc-delay`` ago wait for it, as a
  fresh put's reference may still be on its way). The baseline, measured in the same
  run right after, is a plain Python loop writing the same blocks n3 had to receive
  (``_common.BaselineStore``: hash, zstd -1, temp file, fsync, rename, directory fsync)
  in one thread: ``ratio`` = baseline seconds / seconds until n3 is synced (1.0 =
  joining costs what copying the bytes costs).
- **puts during the move**: ``--puts`` puts of ``--size`` bytes through n0 (16 tasks),
  once before the join and once while it runs; ``ratio`` = puts/s during / puts/s before.

Every node runs in this one process (one Trio thread for all of them), which is the
slowest setting for trioblock: in production each node has its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import trio

import trioblock
from trioblock.testing import Cluster, open_cluster

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import BaselineStore, environment, make_blocks

TiB = 1 << 40


async def put_many(bm: trioblock.BlockManager, blocks: list[bytes], tasks: int = 16) -> float:
    """Put ``blocks`` with ``tasks`` tasks; seconds taken."""
    started = time.perf_counter()

    async def worker(share: list[bytes]) -> None:
        for data in share:
            await bm.put_block(data)

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(worker, blocks[i::tasks])
    return time.perf_counter() - started


async def wait_for(predicate: Any, poll: float = 0.05) -> float:
    """Poll ``predicate`` (a node's status) until it holds; seconds waited."""
    started = time.perf_counter()
    while not predicate():  # noqa: ASYNC110  (polling another object's status)
        await trio.sleep(poll)
    return time.perf_counter() - started


async def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    blocks = make_blocks(args.blocks, args.size, "random", seed=1)
    before_puts = make_blocks(args.puts, args.size, "random", seed=2)
    during_puts = make_blocks(args.puts, args.size, "random", seed=3)
    result: dict[str, Any] = {"blocks": args.blocks, "size": args.size, "puts": args.puts}
    async with open_cluster(
        os.path.join(root, "cluster"),
        n=3,
        transport="tcp",
        disable_scrub=True,
        gc_delay=args.gc_delay,
    ) as c:
        n0 = c.nodes["n0"]
        hashes = []
        for start in range(0, len(blocks), 64):
            async with trio.open_nursery() as nursery:
                for data in blocks[start : start + 64]:

                    async def one(data: bytes = data) -> None:
                        h = await n0.put_block(data)
                        await n0.add_reference(h, "bench")
                        hashes.append(h)

                    nursery.start_soon(one)
        seconds = await put_many(n0, before_puts)
        result["puts_per_s_before"] = args.puts / seconds

        n3 = await c.add_node("n3")
        joined = await _join(c, n3, during_puts, result)
        moved = [data for data in blocks if "n3" in joined.storage_nodes(trioblock.blake2sum(data))]
        result["blocks_moved_to_n3"] = len(moved)
    # The plain loop, in the same run, on the blocks n3 received.
    store = BaselineStore(os.path.join(root, "baseline"), fsync=True)
    started = time.perf_counter()
    await trio.to_thread.run_sync(lambda: [store.put(d) for d in moved])
    result["baseline_copy_s"] = time.perf_counter() - started
    result["join_ratio"] = result["baseline_copy_s"] / result["join_synced_s"]
    result["puts_ratio"] = result["puts_per_s_during"] / result["puts_per_s_before"]
    return result


async def _join(
    c: Cluster, n3: trioblock.BlockManager, during_puts: list[bytes], result: dict[str, Any]
) -> trioblock.LayoutVersion:
    n0 = c.nodes["n0"]
    started = time.perf_counter()
    version = await n0.apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
    async with trio.open_nursery() as nursery:

        async def puts() -> None:
            seconds = await put_many(n0, during_puts)
            result["puts_per_s_during"] = len(during_puts) / seconds

        nursery.start_soon(puts)
        await wait_for(lambda: n3.layout_status().nodes["n3"].synced_version >= version)
        result["join_synced_s"] = time.perf_counter() - started
        await wait_for(
            lambda: all(bm.layout_status().live_versions == [version] for bm in c.nodes.values())
        )
        result["join_retired_s"] = time.perf_counter() - started
        await wait_for(lambda: all(bm.layout_status().settled for bm in c.nodes.values()))
        result["join_settled_s"] = time.perf_counter() - started
    layout = n3.layout
    assert isinstance(layout, trioblock.LayoutVersion)
    return layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--size", type=int, default=16 * 1024)
    parser.add_argument("--puts", type=int, default=400)
    parser.add_argument(
        "--gc-delay",
        type=float,
        default=10.0,
        help="the nodes' gc_delay: copies written less than this ago are deleted only "
        "once it has passed, so it bounds when a change is settled (default 10 s)",
    )
    parser.add_argument("--quick", action="store_true", help="300 blocks, 100 puts")
    parser.add_argument("--full", action="store_true", help="4000 blocks, 800 puts")
    parser.add_argument("--dir", default=None, help="where the nodes' directories go")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.puts = 300, 100
    elif args.full:
        args.blocks, args.puts = 4000, 800
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trioblock-bench-") as root:
        result = trio.run(run, args, root)
        result["environment"] = environment(root)
    print(
        f"join: {result['blocks_moved_to_n3']} of {args.blocks} blocks of {args.size} B "
        f"moved to n3: synced in {result['join_synced_s']:.2f} s, old version retired in "
        f"{result['join_retired_s']:.2f} s, settled (surplus copies deleted, gc_delay "
        f"{args.gc_delay:g} s) in {result['join_settled_s']:.2f} s; plain copy loop "
        f"{result['baseline_copy_s']:.2f} s; ratio (plain / synced) {result['join_ratio']:.2f}"
    )
    print(
        f"puts through n0 ({args.puts} x {args.size} B, 16 tasks): "
        f"{result['puts_per_s_before']:.0f}/s before, {result['puts_per_s_during']:.0f}/s "
        f"during the move; ratio {result['puts_ratio']:.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
