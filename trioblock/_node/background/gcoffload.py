"""Before a GC deletion: ask the other storage nodes whether they need the blocks, and
send the blocks to those that do (the ``Offloader``).

Every other storage node of a batch is asked once (``NeedBlocksQuery`` through
``RpcClient.need_blocks``, which falls back to one ``NeedBlockQuery`` per block for a
peer that does not know the batch form), all nodes at once. The few blocks some node
needs are then read (verified) and sent. A block whose storage nodes could not all be
asked, or which some node needing it did not receive, gets a :class:`DeletionDeferred`
naming each node and its cause; the other blocks of the batch go on.

One exception, for blocks managed by cluster references: when fewer storage nodes than
the write quorum could not be asked, the block may be deleted without them (see
:func:`decidable_without`; the argument is in docs/cluster.md, "Deleting while a node is
down"). One INFO line per batch says so.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import trio

from ..._core.hashing import Hash
from ..._core.resync import offload_allowed
from ...errors import CorruptBlockError, DeletionDeferred, TransportError
from ..context import NodeContext, describe
from ..writes import Writer

log = logging.getLogger("trioblock.resync")


@dataclass(slots=True)
class OffloadResult:
    """What the offload of a batch found: blocks that may not be deleted yet (and why),
    and which blocks were sent to which nodes."""

    deferred: dict[Hash, DeletionDeferred] = field(default_factory=dict)
    sent: dict[Hash, list[str]] = field(default_factory=dict)
    #: blocks deleted without asking these storage nodes (they could not be asked)
    without: dict[Hash, list[str]] = field(default_factory=dict)


class Offloader:
    """Asks and feeds the other storage nodes before this node deletes blocks."""

    def __init__(self, ctx: NodeContext, writer: Writer) -> None:
        self._ctx = ctx
        self._writer = writer

    async def offload(self, hashes: list[Hash]) -> OffloadResult:
        """Make sure no other storage node needs ``hashes`` from here (see the module).

        Holds no lock: a corrupt copy found while offloading is quarantined by the store
        (under the block's lock), counted, and not sent.
        """
        ctx = self._ctx
        result = OffloadResult()
        asked: dict[str, list[Hash]] = defaultdict(list)
        for hash in hashes:
            storage = ctx.layout.storage_nodes(hash)
            if not offload_allowed(len(storage), ctx.layout.write_quorum):
                result.deferred[hash] = DeletionDeferred(
                    f"not deleting {hash.hex()}: {len(storage)} storage nodes known, "
                    f"write quorum is {ctx.layout.write_quorum}"
                )
                continue
            for node in storage:
                if node != ctx.node_id:
                    asked[node].append(hash)
        if not asked:
            return result
        rpc = ctx.rpc
        if rpc is None:
            raise TransportError("no transport configured to reach the other storage nodes")
        needing: dict[Hash, list[str]] = defaultdict(list)
        failures: dict[Hash, dict[str, BaseException]] = defaultdict(dict)

        async def ask(node: str, batch: list[Hash]) -> None:
            try:
                answers = await rpc.need_blocks(
                    node, batch, background=True, timeout=ctx.config.need_block_query_timeout
                )
            except Exception as exc:  # that node's failure: reported per block, below
                for hash in batch:
                    failures[hash][node] = exc
                return
            for hash, needed in zip(batch, answers, strict=True):
                if needed:
                    needing[hash].append(node)

        async with trio.open_nursery() as nursery:
            for node, batch in asked.items():
                nursery.start_soon(ask, node, batch)
        for hash, failed in failures.items():
            if self.decidable_without(hash, len(failed)):
                result.without[hash] = sorted(failed)
                continue
            result.deferred[hash] = DeletionDeferred(
                f"not deleting {hash.hex()} yet: cannot ask "
                + "; ".join(f"{n} ({_cause(e)})" for n, e in sorted(failed.items()))
                + " whether it is needed"
            )
        if result.without:
            unasked = sorted({n for nodes in result.without.values() for n in nodes})
            log.info(
                "%s: deleting %d unreferenced block(s) without asking %s (could not be "
                "asked): the storage nodes asked exclude any acknowledged reference",
                ctx.node_id,
                len(result.without),
                ", ".join(unasked),
            )
        for hash, nodes in needing.items():
            if hash in result.deferred:
                continue
            send_failures = await self._send(hash, sorted(nodes))
            if send_failures:
                result.deferred[hash] = DeletionDeferred(
                    f"not deleting {hash.hex()} yet: could not send it to "
                    + "; ".join(f"{n} ({_cause(e)})" for n, e in sorted(send_failures.items()))
                )
            else:
                result.sent[hash] = sorted(nodes)
        return result

    def decidable_without(self, hash: Hash, unasked: int) -> bool:
        """Whether ``hash`` may be deleted although ``unasked`` of its other storage
        nodes could not be asked.

        Only for a block managed by cluster references (this node holds rows of it in
        ``block_ref``, none alive) under a single live layout version, and only when
        ``unasked < write_quorum``: an acknowledged reference is held by at least
        ``write_quorum`` storage nodes, so one of them answered (this node holds none
        alive). Such a node keeps its own copy (its count is non-zero) or said it needs
        the block and is sent this copy first. A block counted only with local
        ``incref``/``decref`` always waits for every node.
        """
        ctx = self._ctx
        if len(ctx.live_layouts) != 1 or unasked >= ctx.layout.write_quorum:
            return False
        alive, rows = ctx.db.refs.count_alive(hash)
        return rows > 0 and alive == 0

    async def _send(self, hash: Hash, nodes: list[str]) -> dict[str, BaseException]:
        """Send the local copy of ``hash`` to ``nodes``; the failures, per node."""
        ctx = self._ctx
        failures: dict[str, BaseException] = {}
        try:
            found = await ctx.store.read_verified(hash)
        except CorruptBlockError:
            await ctx.corrupt_copy_found(hash, resync=False)  # (quarantined by the store)
            log.warning(
                "%s: unreferenced block %s is corrupt: quarantined, not offloaded",
                ctx.node_id,
                hash.short(),
            )
            return failures
        if found is None:
            return failures
        _plaintext, block, _loc = found

        async def send(node: str) -> None:
            try:
                await self._writer.send_one(node, hash, block, True)
            except Exception as exc:  # reported by the caller, in one error
                failures[node] = exc

        # One bytes object goes to every node: counted once in the budget.
        async with ctx.budget.hold(len(block)), trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(send, node)
        sent = [n for n in nodes if n not in failures]
        ctx.metrics.resync_sent += len(sent)
        if not failures:
            log.debug(
                "%s: offloaded %s to %s before deleting", ctx.node_id, hash.short(), ", ".join(sent)
            )
        return failures


def _cause(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return describe(exc)


__all__ = ["DeletionDeferred", "OffloadResult", "Offloader"]
