"""``trioblock demo``: one node on the embedded default, narrated.

It stores blocks (compressible and not), reads and streams them back, takes and drops
references, lets the garbage collector delete what is no longer referenced, corrupts a
file to show verification and quarantine, and prints the node's counters. By default it
runs in virtual time (``trio.testing.MockClock``), so a 10-minute GC delay passes in
milliseconds; ``--real-time`` uses the wall clock and a short GC delay instead.

Every line starts with the node's time since the demo began (``t=+130.0s``), virtual or
real, so that delays the node logs ("next try in 120s") and the times the demo reports
("next try at t=+250.0s") can be checked against each other.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import trio
import trio.testing

from .. import Config, CorruptBlockError, MissingBlockError, open_block_manager

log = logging.getLogger("trioblock.demo")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, help="where to keep the node's files (default: a temp dir)"
    )
    parser.add_argument("--blocks", type=int, default=8, help="how many blocks to store")
    parser.add_argument(
        "--real-time",
        action="store_true",
        help="use the wall clock (GC delay 2 s) instead of virtual time",
    )


def say(message: str, *args: object) -> None:
    log.info(message, *args)


class NodeTime(logging.Filter):
    """Stamps each record with the Trio clock's time since ``start`` (``t=+12.5s``)."""

    def __init__(self) -> None:
        super().__init__()
        self.start: float | None = None

    def elapsed(self) -> float | None:
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio.run
            return None
        if self.start is None:
            self.start = now
        return now - self.start

    def filter(self, record: logging.LogRecord) -> bool:
        elapsed = self.elapsed()
        record.node_time = "" if elapsed is None else f"t=+{elapsed:.1f}s"
        return True


NODE_TIME = NodeTime()


async def narrate(root: Path, n_blocks: int, gc_delay: float) -> None:
    config = Config(
        node_id="demo-1",
        metadata_dir=root / "meta",
        data_dir=root / "data",
        gc_delay=gc_delay,
    )
    async with open_block_manager(config) as bm:
        say(
            "opened node %s: metadata in %s, blocks in %s",
            config.node_id,
            config.metadata_dir,
            config.data_dir,
        )
        hashes = []
        for i in range(n_blocks):
            data = (
                (f"block {i}: " + "compressible text " * 2000).encode()
                if i % 2 == 0
                else os.urandom(64 * 1024)
            )
            h = await bm.put_block(data)
            bm.incref(h)
            hashes.append((h, data))
        say(
            "stored %d blocks and took one reference on each (rc table: %d rows)",
            len(hashes),
            bm.rc_len(),
        )
        for h, data in hashes[:2]:
            assert await bm.get_block(h) == data
        say("read back and verified the first two blocks")
        h0, _data0 = hashes[0]
        async with bm.stream_block(h0) as chunks:
            total = sum([len(c) async for c in chunks])
        stored = await bm.local_block_path(h0)
        say(
            "streamed block %s: %d plaintext bytes (stored as %s)",
            h0.short(),
            total,
            stored.name if stored else "?",
        )

        dropped = hashes[: n_blocks // 2]
        for h, _ in dropped:
            bm.decref(h)
        say(
            "dropped the reference on %d blocks; GC deletes them after gc_delay=%.0fs (+10 s)",
            len(dropped),
            gc_delay,
        )
        await trio.sleep(gc_delay + 15)
        gone = [h for h, _ in dropped if not await bm.has_local_block(h)]
        say(
            "after the GC delay: %d of %d dropped blocks deleted, %d referenced blocks kept",
            len(gone),
            len(dropped),
            sum([await bm.has_local_block(h) for h, _ in hashes[n_blocks // 2 :]]),
        )

        victim, _ = hashes[-1]
        path = await bm.local_block_path(victim)
        assert path is not None
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        say("flipped one byte in %s", path.name)
        try:
            await bm.get_block(victim)
        except (CorruptBlockError, MissingBlockError) as exc:
            say("reading it fails cleanly: %s", exc)
        quarantined = [p.name for p in path.parent.iterdir() if p.name.endswith(".corrupted")]
        say(
            "quarantined as %s; queued for resync (queue length %d)",
            quarantined,
            bm.resync_queue_len(),
        )
        await trio.sleep(130)
        for info in bm.list_resync_errors():
            now = NODE_TIME.elapsed() or 0.0
            say(
                "resync error for %s: %d failure(s); next try at t=+%.1fs (no peer holds a copy)",
                info.hash.short(),
                info.error_count,
                now + (info.next_try - bm.now_msec()) / 1000,
            )
        m = bm.metrics
        say(
            "counters: bytes_written=%d bytes_read=%d deletes=%d corruptions=%d "
            "resyncs=%d resync_errors=%d",
            m.bytes_written,
            m.bytes_read,
            m.deletes,
            m.corruptions,
            m.resyncs,
            m.resync_errors,
        )
    say("node closed cleanly")


def run(args: argparse.Namespace) -> int:
    NODE_TIME.start = None
    handler = logging.StreamHandler()
    handler.addFilter(NODE_TIME)
    handler.setFormatter(logging.Formatter("%(node_time)11s %(name)-17s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("trioblock.storage").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="trioblock-demo-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        if args.real_time:
            trio.run(narrate, root, args.blocks, 2.0)
        else:
            say("running in virtual time: delays pass instantly, disk work is real")
            trio.run(
                narrate,
                root,
                args.blocks,
                600.0,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
    return 0
