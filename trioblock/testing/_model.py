"""A reference model of a cluster and the invariants trioblock must keep.

:func:`run_operations` applies a sequence of operations to a running
:class:`~trioblock.testing.Cluster` and to a :class:`ClusterModel` of what the
application did (which blocks it put, how many references it holds on each). The model
plays the application's metadata layer: a reference is taken on every storage node of
the block, and a node that was down catches up when it starts (as Garage's table sync
would). :func:`check_converged` then asserts the invariants:

- an application takes a reference on a block only right after writing it (as a
  content-addressed application does), and releases references it holds;
- every ``get_block`` returned the exact bytes that were put, or raised a clear
  ``MissingBlockError``/``CorruptBlockError`` (checked as operations run);
- after the cluster settles, every block referenced on a storage node is present and
  valid there, and readable from every node;
- a block whose references all went away long enough ago (and that was not written
  again since) is deleted everywhere.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .._core.hashing import Hash
from .._node import GC_CHECK_SLACK_MSEC, BlockManager
from ..errors import CorruptBlockError, MissingBlockError
from ._cluster import Cluster

log = logging.getLogger("trioblock.testing")


# -- operations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    """Put ``content`` through node ``via`` (or another available node if it is down)."""

    content: bytes
    via: str


@dataclass(frozen=True)
class Incref:
    """Take a reference on the ``block``-th block put so far (modulo their number) on
    each of its storage nodes; an unreferenced block is put again first, as a
    content-addressed application would."""

    block: int


@dataclass(frozen=True)
class Decref:
    """Release a reference on the ``block``-th block put so far (skipped if none is held)."""

    block: int


@dataclass(frozen=True)
class Get:
    """Read the ``block``-th block put so far through node ``via``; the bytes must be
    exactly those put (or a clear ``MissingBlockError`` / ``CorruptBlockError``)."""

    block: int
    via: str


@dataclass(frozen=True)
class Stop:
    """Stop ``node`` cleanly (skipped when another node is unavailable)."""

    node: str


@dataclass(frozen=True)
class Start:
    """Start a stopped ``node`` again; the model replays what it missed."""

    node: str


@dataclass(frozen=True)
class Wipe:
    """Stop ``node``, delete its metadata and data, start it empty (only while every
    other node is up)."""

    node: str


@dataclass(frozen=True)
class Isolate:
    """Partition ``node`` from every other node (until ``Heal`` or its ``Stop``)."""

    node: str


@dataclass(frozen=True)
class Heal:
    """End any partition."""


@dataclass(frozen=True)
class Corrupt:
    """Flip a byte of node ``node``'s copy of the ``block``-th block put so far."""

    block: int
    node: str


@dataclass(frozen=True)
class PowerCut:
    """Cut ``node``'s power: ``cluster.power_loss`` (kill, lose what was not fsynced on
    its simulated disk, start again). Skipped on the real disk, on a stopped node, and
    while another node is unavailable."""

    node: str


@dataclass(frozen=True)
class Advance:
    """Let ``seconds`` of (virtual) time pass."""

    seconds: float


@dataclass(frozen=True)
class Settle:
    """Let the cluster settle: background work runs until queues are quiet."""


Operation = (
    Put
    | Incref
    | Decref
    | Get
    | Stop
    | Start
    | Wipe
    | Isolate
    | Heal
    | Corrupt
    | PowerCut
    | Advance
    | Settle
)


def _corrupt_copy(cluster: Cluster, node_id: str, path: Path) -> bool:
    """Flip a byte of a node's copy, keeping its size and modification time (the node's
    record of when the copy was written, on its clock, which the GC reads); False when
    the copy is empty."""
    if cluster.disk_kind == "simulated":
        sim = cluster.disk(node_id)
        if not sim.read_file(path):
            return False
        sim.rot(path)  # damage at rest: size and mtime kept
        return True
    raw = bytearray(path.read_bytes())
    if not raw:
        return False
    raw[len(raw) // 2] ^= 0x55
    mtime_ns = path.stat().st_mtime_ns
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return True


# -- the model -------------------------------------------------------------------------


@dataclass
class ClusterModel:
    """What the application did, and what the cluster must therefore hold."""

    contents: dict[Hash, bytes] = field(default_factory=dict)
    order: list[Hash] = field(default_factory=list)
    refs: dict[Hash, int] = field(default_factory=lambda: defaultdict(int))
    #: reference changes a stopped node has not seen yet: node -> hash -> [increfs, decrefs]
    pending: dict[str, dict[Hash, list[int]]] = field(default_factory=lambda: defaultdict(dict))
    #: (trio time) when a block's references last dropped to zero
    zero_since: dict[Hash, float] = field(default_factory=dict)
    last_put: dict[Hash, float] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    isolated: str | None = None
    corrupted: set[tuple[Hash, str]] = field(default_factory=set)
    gets_ok: int = 0
    gets_failed: int = 0
    applied: int = 0
    skipped: int = 0

    def pick(self, index: int) -> Hash | None:
        return self.order[index % len(self.order)] if self.order else None

    def unavailable(self) -> set[str]:
        return self.stopped | ({self.isolated} if self.isolated else set())


def _apply_ref(cluster: Cluster, model: ClusterModel, h: Hash, delta: int) -> None:
    for node in cluster.layout.storage_nodes(h):
        bm = cluster.nodes.get(node)
        if bm is None:
            counts = model.pending[node].setdefault(h, [0, 0])
            counts[0 if delta > 0 else 1] += 1
        elif delta > 0:
            bm.incref(h)
        else:
            bm.decref(h)


def _catch_up(cluster: Cluster, model: ClusterModel, node: str) -> None:
    """Replay the reference changes a node missed (increfs first, as they happened
    before the decrefs that undo them), like an application replaying its log."""
    bm = cluster.nodes[node]
    for h, (increfs, decrefs) in model.pending.pop(node, {}).items():
        for _ in range(increfs):
            bm.incref(h)
        for _ in range(decrefs):
            bm.decref(h)


def settle_seconds(cluster: Cluster) -> float:
    """Virtual time that lets every pending resync, GC and back-off play out once."""
    config = cluster.config(cluster.node_ids[0])
    return (
        config.gc_delay
        + GC_CHECK_SLACK_MSEC / 1000
        + 2 * config.rpc_timeout
        + config.resync_retry_delay
        + 30
    )


async def scrub_to_end(bm: BlockManager, poll: float = 1.0) -> None:
    """Run a scrub of ``bm`` now and wait (polling every ``poll`` seconds) until it ends."""
    await bm.scrub("start")
    while bm.scrub_status().state.in_progress:  # noqa: ASYNC110 (a status, no event)
        await trio.sleep(poll)


async def settle(cluster: Cluster, model: ClusterModel, *, rounds: int = 3) -> None:
    """Heal the network, start every node, let resync and GC run to completion."""
    cluster.net.heal()
    model.isolated = None
    for node in sorted(model.stopped):
        await cluster.start(node)
        _catch_up(cluster, model, node)
    model.stopped.clear()
    # A scrub finds the corrupted copies, quarantines them and queues their repair.
    for node in sorted({node for _h, node in model.corrupted}):
        await scrub_to_end(cluster.nodes[node])
    model.corrupted.clear()
    for _ in range(rounds):
        for bm in cluster.nodes.values():
            bm.retry_all_now()
        await trio.sleep(settle_seconds(cluster))


async def run_operations(
    cluster: Cluster, operations: list[Operation], model: ClusterModel | None = None
) -> ClusterModel:
    """Apply ``operations`` to the cluster and the model; check every read on the way."""
    model = model or ClusterModel()
    everyone = set(cluster.node_ids)
    for op in operations:
        log.debug("op: %s", op)
        if isinstance(op, Put):
            via = op.via if op.via not in model.unavailable() else None
            via = via or next((n for n in cluster.node_ids if n not in model.unavailable()), None)
            if via is None:
                model.skipped += 1
                continue
            put_hash = await cluster.nodes[via].put_block(op.content)
            if put_hash not in model.contents:
                model.contents[put_hash] = op.content
                model.order.append(put_hash)
            model.last_put[put_hash] = trio.current_time()
        elif isinstance(op, Incref | Decref):
            picked = model.pick(op.block)
            if picked is None or (isinstance(op, Decref) and model.refs[picked] == 0):
                model.skipped += 1
                continue
            delta = 1 if isinstance(op, Incref) else -1
            if delta > 0 and model.refs[picked] == 0:
                # An application references a block by writing it (content-addressed
                # dedup): its copies may have been collected since it was last used.
                via = next((n for n in cluster.node_ids if n not in model.unavailable()), None)
                if via is None:
                    model.skipped += 1
                    continue
                await cluster.nodes[via].put_block(model.contents[picked])
                model.last_put[picked] = trio.current_time()
            model.refs[picked] += delta
            if model.refs[picked] == 0:
                model.zero_since[picked] = trio.current_time()
            else:
                model.zero_since.pop(picked, None)
            _apply_ref(cluster, model, picked, delta)
        elif isinstance(op, Get):
            target = model.pick(op.block)
            bm = cluster.nodes.get(op.via)
            if target is None or bm is None:
                model.skipped += 1
                continue
            try:
                data = await bm.get_block(target)
            except (MissingBlockError, CorruptBlockError):
                model.gets_failed += 1
            else:
                assert data == model.contents[target], (
                    f"get_block({target.hex()}) returned wrong bytes"
                )
                model.gets_ok += 1
        elif isinstance(op, Stop):
            if model.unavailable() - {op.node} or op.node in model.stopped:
                model.skipped += 1
                continue
            if model.isolated == op.node:
                cluster.net.heal()
                model.isolated = None
            await cluster.stop(op.node)
            model.stopped.add(op.node)
        elif isinstance(op, Start):
            if op.node not in model.stopped:
                model.skipped += 1
                continue
            await cluster.start(op.node)
            model.stopped.discard(op.node)
            _catch_up(cluster, model, op.node)
        elif isinstance(op, Wipe):
            if model.unavailable() or model.corrupted:
                model.skipped += 1
                continue
            await cluster.wipe(op.node)
            bm = cluster.nodes[op.node]
            for h, count in model.refs.items():
                if count > 0 and op.node in cluster.layout.storage_nodes(h):
                    for _ in range(count):
                        bm.incref(h)
            await settle(cluster, model, rounds=1)
        elif isinstance(op, Isolate):
            if model.unavailable():
                model.skipped += 1
                continue
            cluster.net.partition([op.node], sorted(everyone - {op.node}))
            model.isolated = op.node
        elif isinstance(op, Heal):
            cluster.net.heal()
            model.isolated = None
        elif isinstance(op, Corrupt):
            victim = model.pick(op.block)
            bm = cluster.nodes.get(op.node)
            if victim is None or bm is None or any(c[0] == victim for c in model.corrupted):
                model.skipped += 1
                continue
            path = await bm.local_block_path(victim)
            if path is None or not _corrupt_copy(cluster, op.node, path):
                model.skipped += 1
                continue
            model.corrupted.add((victim, op.node))
        elif isinstance(op, PowerCut):
            if (
                cluster.disk_kind != "simulated"
                or model.unavailable() - {op.node}
                or op.node in model.stopped
            ):
                model.skipped += 1
                continue
            if model.isolated == op.node:
                cluster.net.heal()
                model.isolated = None
            await cluster.power_loss(op.node)
        elif isinstance(op, Advance):
            await trio.sleep(op.seconds)
        elif isinstance(op, Settle):
            await settle(cluster, model, rounds=1)
        model.applied += 1
    return model


async def check_converged(cluster: Cluster, model: ClusterModel) -> None:
    """Settle the cluster, then assert that it holds exactly what the model says."""
    await settle(cluster, model)
    now = trio.current_time()
    gc_wait = settle_seconds(cluster)
    for h in model.order:
        storage = cluster.layout.storage_nodes(h)
        if model.refs[h] > 0:
            for node in storage:
                bm = cluster.nodes[node]
                assert bm.get_block_rc(h) == model.refs[h], (
                    f"{node}: rc of {h.hex()} is {bm.get_block_rc(h)}, expected {model.refs[h]}"
                )
                assert await bm.has_local_block(h), f"{node} lost referenced block {h.hex()}"
                corruptions = bm.metrics.corruptions
                assert await bm.get_block(h) == model.contents[h]
                assert bm.metrics.corruptions == corruptions, (
                    f"{node}: its copy of referenced block {h.hex()} is corrupt"
                )
            for bm in cluster.nodes.values():
                assert await bm.get_block(h) == model.contents[h]
        elif h in model.zero_since:
            # A put after the last reference went away queues no deletion check (as in
            # Garage): such a block waits for a repair, so it is not expected gone.
            if model.last_put.get(h, 0.0) > model.zero_since[h]:
                continue
            quiet_since = model.zero_since[h]
            if now - quiet_since < 2 * gc_wait:
                continue
            for node in storage:
                assert not await cluster.nodes[node].has_local_block(h), (
                    f"{node} still holds {h.hex()}, unreferenced since {now - quiet_since:.0f}s"
                )


__all__ = [
    "Advance",
    "ClusterModel",
    "Corrupt",
    "Decref",
    "Get",
    "Heal",
    "Incref",
    "Isolate",
    "Operation",
    "PowerCut",
    "Put",
    "Settle",
    "Start",
    "Stop",
    "Wipe",
    "check_converged",
    "run_operations",
    "settle",
]
