"""The client side of the cluster-reference requests: updates, queries, anti-entropy."""

from __future__ import annotations

from collections.abc import Iterable

from .._core.hashing import Hash
from ..errors import ProtocolError
from .client_base import RequestBase, unexpected_reply
from .errormap import remote_error
from .messages import (
    MAX_HELD_QUERY,
    BlocksHeldQuery,
    BlocksHeldReply,
    Error,
    Ok,
    OwnedQuery,
    OwnedReply,
    RefCollect,
    RefDigests,
    RefDigestsReply,
    RefEntries,
    RefFetch,
    RefTuple,
    RefUpdate,
    RefUpdateReply,
    checked,
)
from .pool import Connection


class RefRequests(RequestBase):
    """The cluster-reference requests of :class:`.client.RpcClient`."""

    # -- cluster references ------------------------------------------------------------

    async def ref_update(
        self,
        peer: str,
        entries: Iterable[RefTuple],
        *,
        background: bool,
        report: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> list[bool] | None:
        """Send reference entries ``(hash, owner, deleted, ts)`` (1..4096) for ``peer`` to merge.

        With ``report``, returns one flag per entry: True when it left an alive
        reference on ``peer`` to a block ``peer`` holds no copy of; None when the peer
        answered a plain ``Ok`` (an older peer, which does not say). A reply of the
        wrong length is a ``ProtocolError``. ``ValueError`` if an entry is malformed
        (before anything is sent).
        """
        request = checked(RefUpdate(list(entries), report))
        assert isinstance(request, RefUpdate)

        async def op(conn: Connection) -> list[bool] | None:
            await conn.channel.send_message(request)
            event = await conn.receive()
            if isinstance(event, Ok | RefUpdateReply):
                conn.done = True
                return event.missing if isinstance(event, RefUpdateReply) else None
            if isinstance(event, Error):
                conn.done = event.kind != "protocol"
                raise remote_error(peer, event)
            raise unexpected_reply(peer, request, event)

        missing = await self.pool.call(peer, background, timeout, op)
        if missing is not None and len(missing) != len(request.entries):
            raise ProtocolError(
                f"{peer} answered RefUpdate of {len(request.entries)} entries with "
                f"{len(missing)} flags"
            )
        return missing if report else None

    async def blocks_held(
        self,
        peer: str,
        hashes: Iterable[Hash],
        *,
        background: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> list[bool]:
        """Whether ``peer`` holds a copy of each block of ``hashes``; one answer per hash.

        Sent as ``BlocksHeldQuery`` messages of up to ``MAX_HELD_QUERY`` hashes each,
        one after the other, each under ``timeout`` (or the default). A reply of the
        wrong length is a ``ProtocolError``; any failure raises (no partial answer).
        """
        hashes = list(hashes)
        answers: list[bool] = []
        for start in range(0, len(hashes), MAX_HELD_QUERY):
            chunk = hashes[start : start + MAX_HELD_QUERY]
            reply = await self._request(
                peer,
                checked(BlocksHeldQuery(chunk)),
                BlocksHeldReply,
                background=background,
                timeout=timeout,
            )
            if len(reply.held) != len(chunk):
                raise ProtocolError(
                    f"{peer} answered BlocksHeldQuery of {len(chunk)} blocks with "
                    f"{len(reply.held)} answers"
                )
            answers.extend(reply.held)
        return answers

    async def owned(
        self,
        peer: str,
        owner: bytes,
        after: bytes,
        limit: int,
        *,
        background: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
    ) -> tuple[list[tuple[Hash, bool]], bool]:
        """Up to ``limit`` of ``peer``'s rows of ``owner`` after hash ``after`` (``b""``:
        from the start): ``(hash, deleted)`` in hash order, and whether more follow.
        More than ``limit`` rows, or rows out of order, is a ``ProtocolError``."""
        request = checked(OwnedQuery(owner, after, limit))
        reply = await self._request(
            peer, request, OwnedReply, background=background, timeout=timeout
        )
        if len(reply.entries) > limit:
            raise ProtocolError(f"{peer} sent {len(reply.entries)} rows, {limit} asked")
        previous = bytes(after)
        for h, _deleted in reply.entries:
            if bytes(h) <= previous:
                raise ProtocolError(f"{peer} sent the rows of an owner out of order")
            previous = bytes(h)
        return reply.entries, reply.more

    async def ref_digests(
        self, peer: str, prefixes: Iterable[bytes], *, background: bool
    ) -> list[tuple[int, bytes]]:
        """``(count, digest)`` of ``peer``'s references under each prefix (1..256), in order.

        A reply of another length than the request is a ``ProtocolError``.
        """
        request = checked(RefDigests(list(prefixes)))
        assert isinstance(request, RefDigests)
        reply = await self._request(peer, request, RefDigestsReply, background=background)
        if len(reply.digests) != len(request.prefixes):
            raise ProtocolError(
                f"{peer} answered {len(request.prefixes)} prefixes with "
                f"{len(reply.digests)} digests"
            )
        return reply.digests

    async def ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int, *, background: bool
    ) -> tuple[list[RefTuple], bool]:
        """Up to ``limit`` of ``peer``'s entries whose hash starts with ``prefix``.

        ``after`` is a resume key (``b""``: from the start). Returns the entries and
        whether more follow. More than ``limit`` entries, or an entry outside the prefix,
        is a ``ProtocolError``.
        """
        request = checked(RefFetch(prefix, after, limit))
        reply = await self._request(peer, request, RefEntries, background=background)
        if len(reply.entries) > limit:
            raise ProtocolError(f"{peer} sent {len(reply.entries)} entries, {limit} asked")
        if any(not entry[0].startswith(prefix) for entry in reply.entries):
            raise ProtocolError(f"{peer} sent an entry outside prefix {bytes(prefix).hex()}")
        return reply.entries, reply.more

    async def ref_collect(
        self, peer: str, entries: Iterable[RefTuple], *, background: bool
    ) -> None:
        """Tell ``peer`` to drop the collected tombstones ``entries`` (1..4096)."""
        request = checked(RefCollect(list(entries)))
        await self._request(peer, request, Ok, background=background)


__all__ = ["RefRequests"]
