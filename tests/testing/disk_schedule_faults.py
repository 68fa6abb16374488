"""The faults of a disk schedule (``disk_schedule_kit.Schedule``): node stops,
crashes and partitions, power loss on one or two nodes at once, failed disk calls, full
disks, latency, and time passing, each drawn from the schedule's seed."""

from __future__ import annotations

import errno
import random

import trio

from trioblock import Hash
from trioblock.errors import TrioblockError
from trioblock.testing import Cluster

RF = 3
DISK_OPS = ("open", "read", "write", "fsync", "rename", "unlink", "list")


class Faults:
    """Fault steps; the schedule provides ``rng``, ``c``, ``down``, ``note`` and
    ``lost_power``."""

    rng: random.Random
    c: Cluster
    down: set[str]
    lost_power: dict[Hash, set[str]]

    def note(self, text: str) -> None:
        raise NotImplementedError

    # -- network faults -----------------------------------------------------------------

    async def crash_or_stop(self) -> None:
        if self.down:
            return
        node = self.rng.choice(sorted(self.c.nodes))
        if self.rng.random() < 0.5:
            await self.c.kill(node)
            self.note(f"  kill {node}")
        else:
            await self.c.stop(node)
            self.note(f"  stop {node}")
        self.down.add(node)

    async def start(self, node: str) -> bool:
        """Start ``node``; a node whose disk fails as it opens stays down (retried)."""
        try:
            await self.c.start(node)
        except (TrioblockError, BaseExceptionGroup) as exc:
            self.note(f"  {node} cannot start: {exc!r}")
            self.down.add(node)
            return False
        self.down.discard(node)
        return True

    async def start_down(self) -> None:
        for node in sorted(self.down):
            await self.start(node)

    async def partition(self) -> None:
        node = self.rng.choice(self.c.node_ids)
        self.note(f"  partition {node}")
        self.c.net.partition([node], [n for n in self.c.node_ids if n != node])

    async def heal_network(self) -> None:
        self.c.net.heal()

    # -- disk faults --------------------------------------------------------------------

    async def power_loss(self) -> None:
        """One or two nodes (at most ``rf - 1``) lose power at once."""
        nodes = self.rng.sample(self.c.node_ids, self.rng.randint(1, RF - 1))
        for node in nodes:
            running = node in self.c.nodes
            await self.c.kill(node)
            done = self.c.disk(node).power_loss()
            self.note(
                f"  power loss {node}: {len(done.kept)} kept, {len(done.dropped)} dropped, "
                f"{len(done.torn)} torn"
            )
            if running:
                await self.start(node)
        for lost in self.lost_power.values():
            lost.update(nodes)

    async def disk_fault(self) -> None:
        node = self.rng.choice(self.c.node_ids)
        op = self.rng.choice(DISK_OPS)
        times = self.rng.randint(1, 6)
        code = self.rng.choice([errno.EIO, errno.EIO, errno.EACCES, errno.EROFS])
        self.note(f"  fail {op} x{times} on {node} ({errno.errorcode[code]})")
        self.c.disk(node).fail(op, errno=code, times=times)

    async def disk_full(self) -> None:
        node = self.rng.choice(self.c.node_ids)
        disk = self.c.disk(node)
        used = disk.statvfs(str(self.c.data_dir(node)))
        room = self.rng.choice([0, 2000, 10000])
        self.note(f"  {node} full at {room} bytes more")
        disk.set_capacity(used.total - used.free + room)

    async def disk_room(self) -> None:
        for node in self.c.node_ids:
            self.c.disk(node).set_capacity(None)

    async def latency(self) -> None:
        # Real time only (virtual time stands still during a disk call): kept tiny.
        node = self.rng.choice(self.c.node_ids)
        self.c.disk(node).set_latency(self.rng.choice([0.0, 0.0002]))

    async def advance(self) -> None:
        await trio.sleep(self.rng.choice([1.0, 5.0, 20.0, 70.0]))
