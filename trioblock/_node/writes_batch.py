"""Batched puts (``put_blocks``): many blocks, one worker trip, a few requests per node.

How a batch travels:

1. Every block is checked (type, size) before anything else: ``TypeError`` /
   ``ValueError`` naming the block, nothing stored.
2. Room in the byte budget (``ram_buffer_max``) for the largest encodings of the whole
   batch (a batch larger than the budget is admitted alone, as a single block larger
   than it is), trimmed to the encoded sizes once they are known.
3. One worker-thread trip hashes and compresses every block. A block given twice is
   stored once (its hash is returned at each of its places).
4. Each storage node gets the blocks it is to hold, in one task per node (none per
   block): a peer as ``PutBlocks`` requests of at most ``MAX_PUT_BLOCKS`` blocks and
   ``MAX_PUT_BLOCKS_BYTES`` bytes, one after the other (one ``PutBlock`` per block to a
   peer that does not know the message); this node (a storage node putting) in one
   grouped write (``_storage.write_blocks``). A block a peer refuses with
   ``StaleLayoutError`` is sent once more after the layouts are exchanged, if the peer
   is still one of its storage nodes.
5. Every block's quorum is counted as the answers come. The call returns once every
   block reached ``write_quorum`` durable writes or can no longer (``PutBatchError``
   then, naming each failed block with its ``QuorumError``); the sends still under way
   go on in the node's nursery, as a ``put_block``'s do, and the budget is given back
   when the last has finished. A caller cancelled meanwhile leaves them running too:
   each block is then either at its quorum or not, never partly written on one node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import outcome
import trio

from .._core.block import DataBlock, hash_and_encode, max_encoded_size
from .._core.hashing import Hash
from .._net.client_puts import chunks
from .._storage import run_blocking
from ..errors import (
    NodeClosedError,
    PutBatchError,
    QuorumError,
    StaleLayoutError,
    TransportError,
    TrioblockError,
)
from .context import PeerContext


class _Writes(Protocol):
    """What a batch uses of the node's ``writes.Writer``."""

    def check_block(self, data: object) -> None: ...

    async def write_local_many(
        self, items: list[tuple[Hash, DataBlock]]
    ) -> list[BaseException | None]: ...

    async def exchange_layouts(self, node: str) -> bool: ...


log = logging.getLogger("trioblock.node")

__all__ = ["BatchPuts"]


class _Pending:
    """One distinct block of a batch and its quorum so far."""

    __slots__ = ("block", "errors", "failure", "hash", "ok", "settled", "targets")

    def __init__(self, hash: Hash, block: DataBlock, targets: list[str]) -> None:
        self.hash = hash
        self.block = block
        self.targets = targets
        self.ok = 0
        self.errors: dict[str, BaseException] = {}
        self.settled = False
        self.failure: TrioblockError | None = None


class _Quorums:
    """The quorum of every block of a batch, counted as the nodes answer."""

    def __init__(self, pendings: list[_Pending], quorum: int) -> None:
        self.pendings = pendings
        self.quorum = quorum
        self.unsettled = len(pendings)
        self.done = trio.Event()
        for p in pendings:
            if len(p.targets) < quorum:  # never reachable (no node, or too few)
                self._settle(p)

    def record(self, node: str, index: int, error: BaseException | None) -> None:
        p = self.pendings[index]
        if error is None:
            p.ok += 1
        else:
            p.errors[node] = error
            log.debug("block %s to %s failed: %r", p.hash.hex(), node, error)
        if not p.settled and (p.ok >= self.quorum or len(p.targets) - len(p.errors) < self.quorum):
            self._settle(p)

    def _settle(self, p: _Pending) -> None:
        p.settled = True
        if p.ok < self.quorum:
            p.failure = QuorumError(
                f"block {p.hash.hex()} could not be written to a quorum"
                if p.targets
                else f"block {p.hash.hex()}: no node to send to",
                quorum=self.quorum,
                successes=p.ok,
                errors=dict(p.errors),
            )
        self.unsettled -= 1
        if self.unsettled == 0:
            self.done.set()


class BatchPuts:
    """``put_blocks`` of one node (module docstring)."""

    def __init__(self, ctx: PeerContext, writer: _Writes) -> None:
        self._ctx = ctx
        self._writer = writer

    async def put_blocks(self, datas: object, compress: bool) -> list[Hash]:
        ctx = self._ctx
        blocks = _as_list(datas)
        for i, data in enumerate(blocks):
            try:
                self._writer.check_block(data)
            except TypeError as exc:
                raise TypeError(f"block {i} of put_blocks: {exc}") from None
            except ValueError as exc:
                raise ValueError(f"block {i} of put_blocks: {exc}") from None
        ctx.require_open()
        if not blocks:
            return []
        level = ctx.config.compression_level if compress else None
        bound = sum(len(d) if level is None else max_encoded_size(len(d)) for d in blocks)
        taken = await ctx.budget.acquire(bound)
        try:
            encoded = await run_blocking(_encode_all, blocks, level, limiter=ctx.cpu_limiter)
            unique = dict(encoded)
            size = sum(len(block) for block in unique.values())
            if taken > size:
                ctx.budget.release(taken - size)
                taken = size
            # From here the budget belongs to the sends: released when all are done.
            held, taken = taken, 0
            ctx.metrics.puts += len(blocks)
            failures = await self._store(list(unique.items()), held)
        finally:
            if taken:
                ctx.budget.release(taken)
        hashes = [h for h, _b in encoded]
        if failures:
            failed = {i: failures[h] for i, h in enumerate(hashes) if h in failures}
            log.info(
                "%s: put_blocks: %d of %d block(s) failed", ctx.node_id, len(failed), len(hashes)
            )
            raise PutBatchError("put_blocks", hashes=list(hashes), failed=failed)
        return hashes

    async def _store(
        self, items: list[tuple[Hash, DataBlock]], held: int
    ) -> dict[Hash, TrioblockError]:
        """Store the distinct encoded ``items`` on their storage nodes; the error of each
        block that did not reach its quorum. ``held`` bytes of the budget are released
        once every send has finished."""
        ctx = self._ctx
        me = ctx.node_id
        try:
            ctx.require_open()
            layout = ctx.layout
            pendings = [_Pending(h, block, layout.storage_nodes(h)) for h, block in items]
            quorum = layout.write_quorum
        except BaseException:
            ctx.budget.release(held)
            raise
        if all(p.targets == [me] for p in pendings):
            # This node alone (an embedded node): one grouped write, no quorum to count.
            try:
                errors = await self._writer.write_local_many(items)
            finally:
                ctx.budget.release(held)
            return {h: _as_error(e) for (h, _b), e in zip(items, errors, strict=True) if e}
        quorums = _Quorums(pendings, quorum)
        by_node: dict[str, list[int]] = {}
        for i, p in enumerate(pendings):
            for node in p.targets:
                by_node.setdefault(node, []).append(i)
        running = len(by_node)

        def finished() -> None:
            nonlocal running
            running -= 1
            if running == 0:
                ctx.budget.release(held)

        if not by_node:
            ctx.budget.release(held)
        for node, indices in by_node.items():
            try:
                nursery = ctx.require_open()
                nursery.start_soon(self._send_node, node, indices, quorums, finished)
            except (RuntimeError, NodeClosedError) as exc:  # the node is closing
                for i in indices:
                    quorums.record(node, i, exc)
                finished()
        await quorums.done.wait()
        return {p.hash: p.failure for p in pendings if p.failure is not None}

    async def _send_node(
        self, node: str, indices: list[int], quorums: _Quorums, finished: Callable[[], None]
    ) -> None:
        """Store the blocks ``indices`` on ``node``, recording each outcome as it comes."""
        ctx = self._ctx
        pendings = quorums.pendings
        recorded = 0
        error: BaseException = TransportError(f"sending blocks to {node} stopped (node closing)")
        try:
            if node == ctx.node_id:
                errors = await self._writer.write_local_many(
                    [(pendings[i].hash, pendings[i].block) for i in indices]
                )
                for i, e in zip(indices, errors, strict=True):
                    quorums.record(node, i, e)
                recorded = len(indices)
                return
            if ctx.rpc is None:
                raise TransportError(f"no transport configured to reach node {node}")
            sizes = [len(pendings[i].block.payload) for i in indices]
            for part in chunks(sizes):
                chunk = [indices[j] for j in part]
                results = await self._send_chunk(node, [pendings[i] for i in chunk])
                for i, e in zip(chunk, results, strict=True):
                    quorums.record(node, i, e)
                recorded += len(chunk)
        except Exception as exc:  # every block not answered yet fails on this node
            error = exc
        finally:
            for i in indices[recorded:]:
                quorums.record(node, i, error)
            finished()

    async def _send_chunk(self, node: str, chunk: list[_Pending]) -> list[BaseException | None]:
        """One request's blocks to a peer; each block's error or None. Blocks refused
        as stale are sent once more after a layout exchange, if still the peer's."""
        ctx = self._ctx
        assert ctx.rpc is not None
        timeout = ctx.config.rpc_timeout
        items = [(p.hash, p.block) for p in chunk]
        errors = _errors(await ctx.rpc.put_block_batch(node, items, per_exchange=timeout))
        stale = [j for j, e in enumerate(errors) if isinstance(e, StaleLayoutError)]
        if stale and await self._writer.exchange_layouts(node):
            again = [j for j in stale if node in ctx.layout.storage_nodes(items[j][0])]
            if again:
                retried = await ctx.rpc.put_block_batch(
                    node, [items[j] for j in again], per_exchange=timeout
                )
                for j, e in zip(again, _errors(retried), strict=True):
                    errors[j] = e
        return errors


def _errors(results: list[outcome.Outcome[None]]) -> list[BaseException | None]:
    return [r.error if isinstance(r, outcome.Error) else None for r in results]


def _as_error(exc: BaseException) -> TrioblockError:
    if isinstance(exc, TrioblockError):
        return exc
    error = TrioblockError(f"the write failed: {exc!r}")
    error.__cause__ = exc
    return error


def _as_list(datas: object) -> list[bytes]:
    if isinstance(datas, bytes | bytearray | memoryview | str):
        raise TypeError(
            "put_blocks takes a list of blocks (each bytes), not one block: "
            "use put_block for a single block"
        )
    try:
        blocks: list[bytes] = list(datas)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"put_blocks takes a list of blocks (each bytes), not {type(datas).__name__}"
        ) from None
    return blocks


def _encode_all(datas: list[bytes], level: int | None) -> list[tuple[Hash, DataBlock]]:
    """Hash and encode every block (in a worker thread)."""
    return [hash_and_encode(data, level) for data in datas]
