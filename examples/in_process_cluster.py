"""Three trioblock nodes in one ``trio.run``, over the in-memory network.

Run it with ``python examples/in_process_cluster.py``. It narrates:

1. puts replicated to the 3 storage nodes (replication factor 3, write quorum 2), each
   block referenced once with ``add_reference`` (counted on every storage node);
2. a node stopped, writes and references continuing with the quorum;
3. the node restarted: anti-entropy brings it the references it missed, and resync
   fetches the blocks from its peers — the application replays nothing;
4. a node wiped (its disk replaced): the same catch-up rebuilds it;
5. a corrupted copy detected on read, quarantined and repaired from a peer.

It runs in virtual time (``trio.testing.MockClock``): the resync delays (2 × rpc_timeout
after an incref) pass instantly; disk and network work are real.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import trio
import trio.testing

from trioblock import Hash
from trioblock.testing import Cluster, open_cluster

log = logging.getLogger("example")


async def holders(cluster: Cluster, h: Hash) -> list[str]:
    return [n for n, bm in sorted(cluster.nodes.items()) if await bm.has_local_block(h)]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="trioblock-cluster-") as tmp:
        async with open_cluster(tmp, n=3, replication_factor=3) as cluster:
            n0 = cluster.nodes["n0"]
            log.info("3 nodes up: %s, layout %s", ", ".join(cluster.nodes), cluster.layout)

            first = []
            for i in range(5):
                h = await n0.put_block(f"block {i} ".encode() * 5000)
                await n0.add_reference(h, f"object-{i}")
                first.append(h)
            log.info(
                "put 5 blocks through n0; block %s is on %s",
                first[0].short(),
                await holders(cluster, first[0]),
            )

            await cluster.stop("n2")
            log.info("stopped n2; writing 5 more blocks with the quorum (2 of 3)")
            missed = []
            for _ in range(5):
                h = await n0.put_block(os.urandom(32 * 1024))
                await n0.add_reference(h, f"late-object-{len(missed)}")
                missed.append(h)
            log.info("block %s is on %s only", missed[0].short(), await holders(cluster, missed[0]))

            n2 = await cluster.start("n2")
            report = await n2.sync_references()  # it also runs by itself, soon after start
            log.info(
                "restarted n2: anti-entropy pulled the %d references it missed; resync queue: %d",
                report.pulled,
                n2.resync_queue_len(),
            )
            await trio.sleep(2 * n2.config.rpc_timeout + 5)
            have = sum([await n2.has_local_block(h) for h in missed])
            log.info(
                "after resync n2 holds %d/5 of the blocks written while it was down "
                "(metrics: %d received)",
                have,
                n2.metrics.resync_received,
            )

            n1 = await cluster.wipe("n1")
            log.info(
                "wiped n1 (new empty disk): it holds %d blocks",
                sum([await n1.has_local_block(h) for h in first + missed]),
            )
            report = await n1.sync_references()
            log.info("n1 pulled %d references from its peers", report.pulled)
            await trio.sleep(2 * n1.config.rpc_timeout + 5)
            log.info(
                "after repair n1 holds %d/10 blocks again",
                sum([await n1.has_local_block(h) for h in first + missed]),
            )

            victim = first[1]
            path = await n0.local_block_path(victim)
            assert path is not None
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
            data = await n0.get_block(victim)
            log.info(
                "flipped a byte in n0's copy of %s: get_block still returned the right "
                "%d bytes (from a peer); n0 counted %d corruption(s)",
                victim.short(),
                len(data),
                n0.metrics.corruptions,
            )
            await trio.sleep(5)
            log.info("n0 repaired its copy: %s", await n0.has_local_block(victim))
            for node, bm in sorted(cluster.nodes.items()):
                log.info(
                    "%s: rc rows %d, queue %d, errors %d, written %d B, read %d B",
                    node,
                    bm.rc_len(),
                    bm.resync_queue_len(),
                    bm.resync_errors_len(),
                    bm.metrics.bytes_written,
                    bm.metrics.bytes_read,
                )
    log.info("cluster stopped cleanly")


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(relativeCreated)6.0fms %(name)-16s %(message)s",
    )
    logging.getLogger("trioblock.net").setLevel(logging.WARNING)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
