"""The node's answers to peers: the ``RpcHandler`` the RPC server calls.

- ``GetBlock``: the local copy, encoded as stored and sent without decoding it: the
  requester verifies every copy it receives, so verifying here too would only double
  the work. A copy over its size limit is quarantined and answered ``corrupt``.
  ``GetBlocks`` does the same for several blocks, read in one worker-thread trip (up to
  4 MiB of them; the asker asks for the rest again);
- ``CorruptReport``: a peer found the copy we served corrupt. We verify our copy (a
  report alone never removes anything) and, if it is indeed corrupt, quarantine it,
  count it and queue the block for resync, which fetches a good copy back;
- ``PutBlock``: the body is received within the byte budget (a bounded wait: two large
  receives must not hold half the budget each and wait for each other forever), verified
  against its hash, and only then written durably. ``PutBlocks`` carries several
  blocks in one body: received the same way (one budget reservation growing with the
  bytes received), then each verified and written, all at once, so that they share
  the storage's grouped write trips; each block has its own outcome;
- ``NeedBlockQuery``: referenced here and no local copy? ``NeedBlocksQuery`` asks the
  same of many blocks: the counts are read first, and only the referenced blocks are
  looked up on disk (under their locks, in one worker-thread trip);
- ``Admin``: handed to the operator handler installed with ``open_block_manager(...,
  admin_handler=...)``; refused when there is none.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from .._core.block import BlockHeader, DataBlock
from .._core.hashing import Hash
from .._core.refcrdt import RefTuple
from .._net.rpc import MAX_GET_BLOCKS_BYTES, AdminResult, PutEntry
from .._storage import read_raw_many, run_blocking
from ..errors import (
    AdminUnavailableError,
    CorruptBlockError,
    MissingBlockError,
    StaleLayoutError,
    TransportError,
    TrioblockError,
)
from .blockinfo import local_block_info
from .context import NodeContext
from .membership import Membership
from .reads import Reader
from .refupdates import References
from .stats import local_node_stats
from .writes import Writer

log = logging.getLogger("trioblock.node")

#: What serves ``Admin`` requests: ``await handler(request, body)``.
AdminCallback = Callable[[dict[str, Any], "bytes | None"], Awaitable[AdminResult]]


class RpcEndpoint:
    """Implements the RPC layer's ``RpcHandler`` for one node."""

    def __init__(
        self,
        ctx: NodeContext,
        reader: Reader,
        writer: Writer,
        references: References,
        admin: AdminCallback | None = None,
        membership: Membership | None = None,
    ) -> None:
        self._ctx = ctx
        self._membership = membership
        self._reader = reader
        self._writer = writer
        self._references = references
        self._admin = admin

    async def rpc_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        """A peer's ``GetBlock``: the local copy, encoded as stored, unverified."""
        ctx = self._ctx
        started = trio.current_time()
        try:
            found = await ctx.store.read_raw(hash)
        except CorruptBlockError as exc:  # over its size limit: never read, never sent
            await ctx.corrupt_copy_found(hash, exc)
            raise
        if found is None:
            raise MissingBlockError(hash)
        block, _loc = found
        ctx.metrics.read_duration.observe(trio.current_time() - started)
        ctx.metrics.bytes_read += len(block)
        ctx.metrics.gets_served += 1
        return block

    async def rpc_get_blocks(self, hashes: list[Hash]) -> list[DataBlock | BaseException | None]:
        """A peer's ``GetBlocks``: the local copy of each of the first hashes, encoded as
        stored, unverified, read in one worker-thread trip up to ``MAX_GET_BLOCKS_BYTES``."""
        ctx = self._ctx
        started = trio.current_time()
        found = await read_raw_many(ctx.store, hashes, MAX_GET_BLOCKS_BYTES)
        out: list[DataBlock | BaseException | None] = []
        for hash, outcome in zip(hashes, found, strict=False):
            if isinstance(outcome, CorruptBlockError):  # over its size limit: never sent
                await ctx.corrupt_copy_found(hash, outcome)
                out.append(outcome)
            elif outcome is None or isinstance(outcome, BaseException):
                out.append(outcome)
            else:
                block = outcome[0]
                ctx.metrics.bytes_read += len(block)
                ctx.metrics.gets_served += 1
                out.append(block)
        ctx.metrics.read_duration.observe(trio.current_time() - started)
        return out

    async def rpc_corrupt_report(self, peer: str, hash: Hash) -> None:
        """``peer`` found the copy we served corrupt: verify ours, quarantine it if bad."""
        ctx = self._ctx
        loc = await ctx.store.find(hash)
        if loc is None:
            return
        counted, quarantined = await ctx.corrupt_copy_found(hash, loc, confirm=True)
        if not counted:
            log.info(
                "%s: %s reported block %s corrupt; our copy verifies (damaged in transit?)",
                ctx.node_id,
                peer,
                hash.short(),
            )
            return
        log.warning(
            "%s: %s found block %s corrupt as served from here: quarantined to %s",
            ctx.node_id,
            peer,
            hash.short(),
            quarantined,
        )

    def _refuse_stale(self, hash: Hash) -> None:
        """``StaleLayoutError`` when no live layout version gives this node a copy of
        ``hash`` (the sender's layout and ours differ: it exchanges and tries again)."""
        ctx = self._ctx
        membership = self._membership
        if (
            membership is not None
            and membership.history is not None
            and not ctx.stores_in_live(ctx.node_id, hash)
        ):
            raise StaleLayoutError(
                f"{ctx.node_id} stores no copy of {hash.hex()} in any live layout version"
            )

    async def _take_budget(self, size: int, taken: int) -> int:
        """Grow this receive's share of the byte budget to cover ``size`` bytes received
        (at most the whole budget), within ``rpc_timeout``; the bytes newly taken."""
        ctx = self._ctx
        wanted = min(size, ctx.budget.capacity) - taken
        if wanted <= 0:
            return 0
        try:
            with trio.fail_after(ctx.config.rpc_timeout):
                return await ctx.budget.acquire(wanted)
        except trio.TooSlowError:
            raise TransportError(
                f"{ctx.node_id}: receive buffer full (ram_buffer_max) for "
                f"{ctx.config.rpc_timeout}s; try again later"
            ) from None

    async def rpc_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        """A peer's ``PutBlock``: receive within the byte budget, verify, then store.

        Refused with ``StaleLayoutError`` when no live layout version gives this node a
        copy (the sender's layout and ours differ: it exchanges and tries again)."""
        ctx = self._ctx
        self._refuse_stale(hash)
        chunks: list[bytes] = []
        size = 0
        taken = 0
        try:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                taken += await self._take_budget(size, taken)
            block = DataBlock(header, b"".join(chunks) if len(chunks) != 1 else chunks[0])
            chunks.clear()
            # Verified before anything touches the disk (in the same worker-thread trip as
            # the write): a peer never makes us store bytes that do not match their name.
            await self._writer.write_local(hash, block, verify=True)
            ctx.metrics.puts_served += 1
        finally:
            ctx.budget.release(taken)

    async def rpc_put_blocks(
        self, blocks: list[PutEntry], body: AsyncIterable[tuple[int, bytes]]
    ) -> list[BaseException | None]:
        """A peer's ``PutBlocks``: receive every block within the byte budget, then
        verify and store each (all at once: they share grouped write trips). One outcome
        per block: None (durably stored), or the ``TrioblockError`` that failed it (a
        ``StaleLayoutError`` for a block this node holds no copy of, nothing stored)."""
        ctx = self._ctx
        outcomes: list[BaseException | None] = [None] * len(blocks)
        for i, entry in enumerate(blocks):
            try:
                self._refuse_stale(entry.hash)
            except StaleLayoutError as exc:
                outcomes[i] = exc
        pieces: list[list[bytes]] = [[] for _ in blocks]
        size = 0
        taken = 0
        try:
            async for index, chunk in body:
                if outcomes[index] is None:
                    pieces[index].append(chunk)
                size += len(chunk)
                taken += await self._take_budget(size, taken)

            async def store(i: int, entry: PutEntry, payload: bytes) -> None:
                try:
                    await self._writer.write_local(
                        entry.hash, DataBlock(entry.header, payload), verify=True
                    )
                except TrioblockError as exc:  # CorruptBlockError, DiskError...
                    outcomes[i] = exc
                    return
                ctx.metrics.puts_served += 1

            async with trio.open_nursery() as nursery:
                for i, entry in enumerate(blocks):
                    if outcomes[i] is None:
                        payload = b"".join(pieces[i])
                        pieces[i] = []
                        nursery.start_soon(store, i, entry, payload)
        finally:
            ctx.budget.release(taken)
        return outcomes

    async def rpc_need_block(self, hash: Hash) -> bool:
        """A peer's ``NeedBlockQuery``: referenced here and no local copy?"""
        ctx = self._ctx
        async with ctx.store.locks.hold(hash):
            loc = await ctx.store.find(hash)
            rc = ctx.db.get_rc(hash)
        return rc.is_nonzero and loc is None

    async def rpc_need_blocks(self, hashes: list[Hash]) -> list[bool]:
        """A peer's ``NeedBlocksQuery``: :meth:`rpc_need_block` for each hash, in order.

        An unreferenced block is not needed whatever the disk holds; the referenced ones
        are looked up together, under their locks (taken in hash order), and their
        counts read again after the lookups.
        """
        ctx = self._ctx
        referenced = sorted({h for h in hashes if ctx.db.get_rc(h).is_nonzero})
        missing: set[Hash] = set()
        if referenced:
            store = ctx.store
            async with AsyncExitStack() as stack:
                for h in referenced:
                    await stack.enter_async_context(store.locks.hold(h))
                found = await run_blocking(
                    lambda: [store.find_sync(h) for h in referenced], limiter=store.limiter
                )
                missing = {
                    h
                    for h, loc in zip(referenced, found, strict=True)
                    if loc is None and ctx.db.get_rc(h).is_nonzero
                }
        return [h in missing for h in hashes]

    async def rpc_admin(self, request: dict[str, Any], body: bytes | None = None) -> AdminResult:
        """An operator request: answered by the installed admin handler."""
        if self._admin is None:
            raise AdminUnavailableError(f"node {self._ctx.node_id} takes no operator requests")
        return await self._admin(request, body)

    async def rpc_layout_exchange(
        self, peer: str, digest: bytes, history: bytes | None, addresses: dict[str, str]
    ) -> tuple[bytes, bytes | None, dict[str, str]]:
        """A peer's ``LayoutExchange``: merge its history, answer with ours."""
        if self._membership is None:
            raise TrioblockError(f"{self._ctx.node_id} keeps no layout history")
        return await self._membership.serve_exchange(peer, digest, history, addresses)

    # -- cluster references (``refupdates.py``; ``peer`` is the authenticated sender) -------

    async def rpc_ref_update(self, peer: str, entries: list[RefTuple]) -> None:
        """Merge a peer's reference entries (its quorum writes and anti-entropy pushes)."""
        await self._references.serve_update(peer, entries)

    async def rpc_ref_update_report(self, peer: str, entries: list[RefTuple]) -> list[bool]:
        """Merge a peer's reference entries; say which left an alive reference here to
        a block this node holds no copy of (an application's add)."""
        return await self._references.serve_update_report(peer, entries)

    async def rpc_blocks_held(self, hashes: list[Hash]) -> list[bool]:
        """A peer's ``BlocksHeldQuery``: whether a copy of each block is here (looked up
        in one worker-thread trip; an application's ``missing_blocks``)."""
        store = self._ctx.store
        return await run_blocking(
            lambda: [store.find_sync(h) is not None for h in hashes], limiter=store.limiter
        )

    async def rpc_owned(
        self, owner: bytes, after: bytes, limit: int
    ) -> tuple[list[tuple[Hash, bool]], bool]:
        """A peer's ``OwnedQuery``: a page of this node's rows of ``owner``."""
        rows, more = await self._ctx.db.refs.owned(owner, after, limit)
        return [(Hash(r[0]), r[2]) for r in rows], more

    async def rpc_ref_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        """Digests of the entries shared with ``peer`` under each prefix."""
        return await self._references.serve_digests(peer, prefixes)

    async def rpc_ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        """A page of the entries shared with ``peer`` under ``prefix``."""
        return await self._references.serve_fetch(peer, prefix, after, limit)

    async def rpc_ref_collect(self, peer: str, entries: list[RefTuple]) -> None:
        """Drop tombstones every storage node holds (asked by the collecting node)."""
        await self._references.serve_collect(peer, entries)

    async def rpc_node_report(self, peer: str, what: str, hash: Hash | None) -> dict[str, Any]:
        """A peer's ``NodeReportQuery`` (an operator's ``block info --cluster`` or
        ``stats`` through another node): this node's view, as plain data."""
        if what == "block" and hash is not None:
            return (await local_block_info(self._ctx, hash)).to_map()
        if what == "stats":
            return (await local_node_stats(self._ctx)).to_map()
        raise TrioblockError(f"unknown node report {what!r}")


__all__ = ["AdminCallback", "AdminUnavailableError", "RpcEndpoint"]
