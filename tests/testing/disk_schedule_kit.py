"""The schedule of ``test_disk_schedules``: one seeded run of puts, references, gets,
network faults and disk faults over a 3-node cluster on simulated disks, then healing
and the checks (see that module for what is checked and how to run many)."""

from __future__ import annotations

import random

import trio
from disk_schedule_faults import RF, Faults

import trioblock
from trioblock.errors import (
    DiskError,
    MissingBlockError,
    PutBatchError,
    QuorumError,
    ReferenceBatchError,
    TrioblockError,
)
from trioblock.testing import Cluster

STEPS = 30
GC_DELAY = 60.0
RPC_TIMEOUT = 5.0
#: Virtual seconds a healed cluster gets to put every copy back.
HEAL_WAIT = 400
QUORUM = 2
#: Errors an update or a put may fail with while nodes or disks are down: the
#: application retries it later (nothing acknowledged, nothing promised).
RETRIED = (QuorumError, DiskError, ReferenceBatchError, trioblock.StaleLayoutError)


class Schedule(Faults):
    def __init__(self, seed: int, cluster: Cluster, data_fsync: bool) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.c = cluster
        self.data_fsync = data_fsync
        self.data: dict[trioblock.Hash, bytes] = {}
        #: owners whose add was acknowledged, and owners removed (remove wins for ever)
        self.alive: dict[trioblock.Hash, set[str]] = {}
        self.removed: dict[trioblock.Hash, set[str]] = {}
        #: updates that failed, retried once healed: (hash, owner, deleted)
        self.pending: list[tuple[trioblock.Hash, str, bool]] = []
        #: per block: copies known when last confirmed, and the nodes that lost power since
        self.copies: dict[trioblock.Hash, int] = {}
        self.lost_power: dict[trioblock.Hash, set[str]] = {}
        self.down: set[str] = set()
        self.owners = 0
        self.log: list[str] = []
        self.gets = 0

    def note(self, text: str) -> None:
        self.log.append(f"[{trio.current_time():.0f}] {text}")

    def via(self) -> tuple[str, trioblock.BlockManager]:
        node = self.rng.choice(sorted(self.c.nodes))
        return node, self.c.nodes[node]

    def fresh(self) -> trioblock.Hash:
        kind = self.rng.random()
        if kind < 0.3:
            data = f"small {self.rng.random()}".encode()
        elif kind < 0.6:
            data = f"compressible {self.rng.random()} ".encode() * self.rng.randint(10, 300)
        else:
            data = self.rng.randbytes(self.rng.randint(600, 6000))  # spans sectors
        h = trioblock.blake2sum(data)
        self.data[h] = data
        return h

    def acknowledged(self, h: trioblock.Hash, owner: str) -> None:
        if owner not in self.removed.get(h, set()):
            self.alive.setdefault(h, set()).add(owner)

    def put_done(self, h: trioblock.Hash) -> None:
        """A put of ``h`` was acknowledged: a write quorum holds it now."""
        if h not in self.copies or self.lost_power.get(h):
            self.copies[h] = QUORUM
            self.lost_power[h] = set()

    # -- what the application does ------------------------------------------------------

    async def put(self, node: str, bm: trioblock.BlockManager, h: trioblock.Hash) -> bool:
        try:
            got = await bm.put_block(self.data[h])
        except RETRIED as exc:
            self.note(f"  put {h.short()} via {node} failed: {type(exc).__name__}")
            return False
        assert got == h
        self.note(f"  put {h.short()} via {node}")
        self.put_done(h)
        return True

    async def add(self, h: trioblock.Hash, owner: str) -> None:
        node, bm = self.via()
        if not await self.put(node, bm, h):
            self.pending.append((h, owner, False))
            return
        try:
            try:
                await bm.add_reference(h, owner)
            except MissingBlockError:
                # Recorded, but the nodes that acknowledged lack the block: put it again.
                self.note(f"  add {h.short()} via {node}: missing, put again")
                if not await self.put(node, bm, h):
                    raise
        except (*RETRIED, MissingBlockError) as exc:
            self.note(f"  add {h.short()} {owner} via {node} failed: {type(exc).__name__}")
            self.pending.append((h, owner, False))
            return
        self.note(f"  add {h.short()} {owner} via {node}")
        self.acknowledged(h, owner)

    async def remove(self, h: trioblock.Hash, owner: str) -> None:
        node, bm = self.via()
        self.alive.get(h, set()).discard(owner)  # unknown until it succeeds
        try:
            await bm.remove_reference(h, owner)
        except RETRIED as exc:
            self.note(f"  remove {h.short()} {owner} via {node} failed: {type(exc).__name__}")
            self.pending.append((h, owner, True))
            return
        self.note(f"  remove {h.short()} {owner} via {node}")
        self.removed.setdefault(h, set()).add(owner)

    async def put_and_reference(self) -> None:
        h = self.fresh()
        self.owners += 1
        await self.add(h, f"o{self.owners}")

    async def reference_again(self) -> None:
        """Another owner for a block with alive owners (no put: the block is there)."""
        live = sorted(h for h, owners in self.alive.items() if owners)
        if not live:
            return
        h = self.rng.choice(live)
        self.owners += 1
        owner = f"o{self.owners}"
        node, bm = self.via()
        try:
            await bm.add_reference(h, owner)
        except (*RETRIED, MissingBlockError) as exc:
            self.note(f"  add {h.short()} {owner} via {node} failed: {type(exc).__name__}")
            self.pending.append((h, owner, False))
            return
        self.note(f"  add {h.short()} {owner} via {node}")
        self.acknowledged(h, owner)

    async def put_many(
        self, node: str, bm: trioblock.BlockManager, hashes: list[trioblock.Hash]
    ) -> set[trioblock.Hash]:
        """``put_blocks`` of ``hashes``; the ones it acknowledged."""
        try:
            got = await bm.put_blocks([self.data[h] for h in hashes])
        except PutBatchError as exc:
            assert exc.hashes == hashes
            done = {trioblock.Hash(h) for h in exc.succeeded}
            self.note(f"  put_blocks via {node}: {len(exc.failed)} of {len(hashes)} failed")
        except RETRIED as exc:
            self.note(f"  put_blocks via {node} failed: {type(exc).__name__}")
            return set()
        else:
            assert got == hashes
            done = set(hashes)
        for h in hashes:
            if h in done:
                self.note(f"  put {h.short()} via {node} (put_blocks)")
                self.put_done(h)
        return done

    async def batch(self) -> None:
        """Several fresh blocks put (one by one, or with one ``put_blocks``, a block
        perhaps twice), then referenced with one ``add_references``."""
        node, bm = self.via()
        pairs = []
        fresh = [self.fresh() for _ in range(self.rng.randint(2, 6))]
        if self.rng.random() < 0.5:
            given = fresh + ([self.rng.choice(fresh)] if self.rng.random() < 0.3 else [])
            stored = await self.put_many(node, bm, given)
        else:
            stored = {h for h in fresh if await self.put(node, bm, h)}
        for h in fresh:
            self.owners += 1
            owner = f"o{self.owners}"
            if h in stored:
                pairs.append((h, owner))
            else:
                self.pending.append((h, owner, False))
        failed: set[tuple[bytes, bytes]] = set()
        try:
            await bm.add_references(pairs)
        except ReferenceBatchError as exc:
            failed = set(exc.failed)
            self.note(f"  batch via {node}: {len(failed)} of {len(pairs)} failed")
        except RETRIED as exc:
            failed = {(h, o.encode()) for h, o in pairs}
            self.note(f"  batch via {node} failed: {type(exc).__name__}")
        for h, owner in pairs:
            if (h, owner.encode()) in failed:
                self.pending.append((h, owner, False))
            else:
                self.note(f"  add {h.short()} {owner} via {node} (batch)")
                self.acknowledged(h, owner)

    async def remove_reference(self) -> None:
        held = sorted((h, o) for h, owners in self.alive.items() for o in owners)
        if not held:
            return
        if self.rng.random() < 0.6:
            await self.remove(*self.rng.choice(held))
            return
        chosen = self.rng.sample(held, min(len(held), self.rng.randint(2, 5)))
        node, bm = self.via()
        for h, owner in chosen:
            self.alive[h].discard(owner)
        failed: set[tuple[bytes, bytes]] = set()
        try:
            await bm.remove_references(chosen)
        except ReferenceBatchError as exc:
            failed = set(exc.failed)
        except RETRIED:
            failed = {(h, o.encode()) for h, o in chosen}
        if failed:
            self.note(f"  batched removal via {node}: {len(failed)} of {len(chosen)} failed")
        for h, owner in chosen:
            if (h, owner.encode()) in failed:
                self.pending.append((h, owner, True))
            else:
                self.note(f"  remove {h.short()} {owner} via {node} (batch)")
                self.removed.setdefault(h, set()).add(owner)

    async def get(self) -> None:
        if not self.data:
            return
        if self.rng.random() < 0.3:
            await self.get_many()
            return
        h = self.rng.choice(sorted(self.data))
        node, bm = self.via()
        try:
            if self.rng.random() < 0.3:
                async with bm.stream_block(h) as chunks:
                    got = b"".join([chunk async for chunk in chunks])
            else:
                got = await bm.get_block(h)
        except TrioblockError as exc:
            self.note(f"  get {h.short()} via {node} failed: {type(exc).__name__}")
            return
        self.gets += 1
        assert got == self.data[h], f"{node} returned wrong bytes for {h.short()}"

    async def get_many(self) -> None:
        """``get_blocks`` of a few blocks (one perhaps twice): each answer is its block."""
        known = sorted(self.data)
        hashes = self.rng.sample(known, min(len(known), self.rng.randint(1, 6)))
        if self.rng.random() < 0.3:
            hashes.append(self.rng.choice(hashes))
        node, bm = self.via()
        try:
            got = await bm.get_blocks(hashes)
        except TrioblockError as exc:
            self.note(f"  get_blocks of {len(hashes)} via {node} failed: {type(exc).__name__}")
            return
        self.gets += len(hashes)
        assert len(got) == len(hashes)
        for h, data in zip(hashes, got, strict=True):
            assert data == self.data[h], f"{node} returned wrong bytes for {h.short()}"

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> None:
        steps = [
            (self.put_and_reference, 6),
            (self.batch, 2),
            (self.reference_again, 1),
            (self.remove_reference, 3),
            (self.get, 3),
            (self.crash_or_stop, 1),
            (self.start_down, 1),
            (self.partition, 1),
            (self.heal_network, 1),
            (self.power_loss, 2),
            (self.disk_fault, 2),
            (self.disk_full, 1),
            (self.disk_room, 1),
            (self.latency, 0.5),
            (self.advance, 2),
            (self.repair_point, 0.5),
        ]
        needs_node = {
            self.put_and_reference,
            self.batch,
            self.reference_again,
            self.remove_reference,
            self.get,
            self.crash_or_stop,
        }
        fns = [f for f, _w in steps]
        weights = [w for _f, w in steps]
        for _ in range(STEPS):
            step = self.rng.choices(fns, weights)[0]
            self.note(step.__name__)
            if not self.c.nodes and step in needs_node:
                self.note("  skipped: no node runs (their disks fail as they start)")
                continue
            await step()
        await self.heal()
        await self.verify()
        await self.remove_everything()

    async def heal(self) -> None:
        """Lift every fault, start every node, retry what failed, let anti-entropy and
        resync run."""
        for node in self.c.node_ids:
            disk = self.c.disk(node)
            disk.clear_faults()
            disk.set_capacity(None)
            disk.set_latency(0)
        self.c.net.heal()
        await self.start_down()
        assert not self.down, f"{sorted(self.down)} cannot start on a healed disk"
        for _round in range(5):
            pending, self.pending = self.pending, []
            for h, owner, deleted in pending:
                if deleted:
                    await self.remove(h, owner)
                else:
                    await self.still_there(h)
                    await self.add(h, owner)
            if not self.pending:
                break
            await trio.sleep(RPC_TIMEOUT * 2)
        assert not self.pending, f"updates keep failing with everything healed: {self.pending}"
        for _ in range(2):
            for bm in list(self.c.nodes.values()):
                await bm.sync_references()
        if not self.data_fsync:
            await self.scrub()
        # Resync fetches what a node lacks; a fetch that failed while a disk was full or
        # failing waits out its back-off (at most 64 x resync_retry_delay).
        for _ in range(HEAL_WAIT // 20):
            await trio.sleep(20)
            if await self.replicated():
                break

    async def scrub(self) -> None:
        """Without data_fsync a power loss can tear a copy under its final name: never
        served (a read verifies it, quarantines it and goes to a peer), and found by the
        scrub, which the operator runs here rather than wait for the automatic one."""
        for bm in self.c.nodes.values():
            await bm.scrub(0)
            await bm.scrub("start")
        for bm in self.c.nodes.values():
            for _ in range(720):
                if bm.scrub_status().state != "running":
                    break
                await trio.sleep(5)
            assert bm.scrub_status().state != "running", "a scrub never ends"

    async def replicated(self) -> bool:
        for h, owners in self.alive.items():
            if owners:
                for node in self.c.layout.storage_nodes(h):
                    if not await self.c.nodes[node].has_local_block(h):
                        return False
        return True

    async def still_there(self, h: trioblock.Hash) -> None:
        """Before a failed add is retried with a put: a block that has alive owners and
        cannot be lost (with data_fsync, any) must be readable, or the put would hide
        its loss."""
        if not self.alive.get(h) or self.may_be_lost(h):
            return
        errors = []
        for node, bm in sorted(self.c.nodes.items()):
            try:
                await bm.get_block(h)
            except TrioblockError as exc:
                errors.append(f"{node}: {exc!r}")
            else:
                return
        raise AssertionError(f"referenced {h.short()} lost: {errors}")

    async def repair_point(self) -> None:
        """Heal mid-run and check; every referenced block is then on every node."""
        await self.heal()
        await self.verify()
        for h in list(self.copies):
            if self.alive.get(h):
                self.copies[h] = RF
                self.lost_power[h] = set()
            else:  # unreferenced: collected in time, nothing promised of it
                del self.copies[h], self.lost_power[h]

    def may_be_lost(self, h: trioblock.Hash) -> bool:
        if self.data_fsync:
            return False
        return self.copies.get(h, 0) - len(self.lost_power.get(h, ())) < 1

    async def verify(self) -> None:
        problems: list[str] = []
        lost = 0
        for h, owners in sorted(self.alive.items()):
            if not owners:
                continue
            risky = self.may_be_lost(h)
            found: list[str] = []
            for node, bm in sorted(self.c.nodes.items()):
                try:
                    got = await bm.get_block(h)
                except TrioblockError as exc:
                    found.append(f"{node}: get {h.short()} failed: {exc!r}")
                else:
                    if got != self.data[h]:
                        problems.append(f"{node}: wrong bytes for {h.short()}")
            for node in self.c.layout.storage_nodes(h):
                bm = self.c.nodes[node]
                if not await bm.has_local_block(h):
                    found.append(f"{node}: referenced {h.short()} not stored")
                if bm.get_block_rc(h) != len(owners):
                    problems.append(f"{node}: rc {bm.get_block_rc(h)} != {len(owners)} {h.short()}")
            if found and risky:
                lost += 1
                self.note(f"  {h.short()} lost (every copy could be): {found[0]}")
                # The application learns of it and drops its references.
                for owner in sorted(owners):
                    await self.remove(h, owner)
                self.copies.pop(h, None)
            else:
                problems += found
        assert not problems, "\n".join(problems)

    async def remove_everything(self) -> None:
        """Every reference removed: once ``gc_delay`` passed, no copy is left anywhere."""
        pairs = sorted((h, o) for h, owners in self.alive.items() for o in owners)
        for i in range(0, len(pairs), 16):
            chunk = pairs[i : i + 16]
            node, bm = self.via()
            await bm.remove_references(chunk)
            for h, owner in chunk:
                self.alive[h].discard(owner)
        if not self.data_fsync:
            # Without data_fsync a power loss can undo a deletion (the unlink was never
            # made durable): the copy is back with no row to say so. The repair pass (or
            # the scrub) walks the files and queues such copies; their deletion follows.
            for bm in self.c.nodes.values():
                await bm.repair()
        # Past gc_delay, and the back-off of a block whose fetches kept failing.
        await trio.sleep(GC_DELAY + 4 * RPC_TIMEOUT)
        for _ in range(HEAL_WAIT // 20):
            if not self.leftovers(temps=False):
                break
            await trio.sleep(20)
        fsync_failed = [
            n for n in self.c.node_ids if any(op == "fsync" for op, *_ in self.c.disk(n).injected)
        ]
        if self.data_fsync and self.leftovers(temps=False, nodes=fsync_failed):
            # A deletion whose directory fsync failed was never made durable (the
            # changes of a failed fsync are forgotten): a power loss then brings the
            # copy back with no row, as without data_fsync. Repair collects it.
            self.note(f"  leftovers after a failed fsync: {self.leftovers(temps=False)}")
            for node in fsync_failed:
                await self.c.nodes[node].repair()
            await trio.sleep(GC_DELAY + 4 * RPC_TIMEOUT)
        problems = self.leftovers(temps=False)
        # A temp file whose unlink failed is left to the sweep a node makes as it starts.
        for node in self.c.node_ids:
            await self.c.restart(node)
        await trio.sleep(10)
        problems += self.leftovers(temps=True)
        for node, bm in sorted(self.c.nodes.items()):
            stored = bm.stored()
            counted = [h.short() for h in self.data if bm.get_block_rc(h)]
            if stored.blocks or stored.bytes or not stored.exact or counted:
                problems.append(f"{node}: {stored}, counts for {counted}")
        assert not problems, "\n".join(problems)

    def leftovers(self, *, temps: bool, nodes: list[str] | None = None) -> list[str]:
        problems = []
        for node in self.c.node_ids if nodes is None else nodes:
            names = [p.rsplit("/", 1)[1] for p in self.c.disk(node).files()]
            # Quarantined copies (``*.corrupted``) are kept on purpose, for the operator.
            blocks = [n for n in names if n != "trioblock-marker" and ".corrupted" not in n]
            left = [n for n in blocks if (".tmp" in n) == temps]
            if left:
                problems.append(f"{node} still holds {left}")
        return problems
