"""The node's view of the cluster layout: its history, applying versions, spreading them.

- A node opened with a ``StaticLayout`` starts from it as version 1, one opened with
  ``JoinCluster`` from no version at all; a history stored in the node's database (the
  ``settings`` row ``cluster_layout``) wins over both. A user's own ``Layout`` (and the
  embedded single node's) is *fixed*: it has no history, and ``apply_layout`` refuses.
- :meth:`Membership.apply` derives the next version from the current one, stores it
  durably, then sends it to every node it knows of (``LayoutExchange`` with the history
  as the body). Every node (a gateway too) exchanges digests with one peer every
  :data:`GOSSIP_INTERVAL` seconds and with all of them when it starts, and a peer whose
  request carried a stale layout is answered ``StaleLayoutError``, after which the two
  exchange histories: a node that was down learns what it missed within seconds.
- Histories merge (``_core/layouthistory.py``), so the order in which nodes hear of
  versions does not matter; a node reports its own progress (synced version, drained,
  what is left to move) into its history, and the reports spread the same way.
- Whenever the history changes, the node's context gets the new live layouts
  (:meth:`PeerContext.set_layouts`), the transport learns the roles' addresses, and
  :attr:`Membership.changed` moves (the mover starts a pass).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import replace

import trio
from trio_util import AsyncValue, move_on_when

from .._core.layouthistory import LayoutHistory, NodeReport, VersionRecord
from .._core.layoutversion import NOMINAL_CAPACITY, LayoutVersion, NodeRole, parse_address
from .._core.placement import JoinCluster, Layout, StaticLayout
from .._storage import MetadataDb
from ..errors import LayoutError, ProtocolError, TrioblockError
from .context import PeerContext, describe
from .layoutstatus import LayoutStatus, NodeLayoutState

log = logging.getLogger("trioblock.layout")

#: Seconds between two digest exchanges with one peer (spread by a random jitter).
GOSSIP_INTERVAL = 5.0
#: The ``settings`` row holding the node's layout history.
HISTORY_KEY = "cluster_layout"
#: Spreads running at once after an apply or a report.
MAX_SPREAD = 32


def initial_history(layout: Layout, stored: bytes | None, node_id: str) -> LayoutHistory | None:
    """The history a node starts with, or None for a fixed layout."""
    if stored is not None:
        try:
            history = LayoutHistory.decode(stored)
        except LayoutError as exc:
            raise LayoutError(f"the stored layout history of {node_id} is damaged: {exc}") from exc
        if history.current is not None or isinstance(layout, JoinCluster):
            return history
    if isinstance(layout, JoinCluster):
        return LayoutHistory()
    if isinstance(layout, StaticLayout):
        first = LayoutVersion.from_static(
            layout.nodes,
            {n: layout.zone_of(n) for n in layout.nodes},
            layout.replication_factor,
            layout.write_quorum,
        )
        return LayoutHistory((first,), (VersionRecord.of(first),))
    return None


class Membership:
    """One node's layout history, and what it does with it."""

    def __init__(
        self,
        ctx: PeerContext,
        history: LayoutHistory | None,
        *,
        db: MetadataDb | None = None,
        seeds: tuple[str, ...] = (),
    ) -> None:
        self._ctx = ctx
        self._db = db
        self._history = history
        self._seeds = seeds
        self._lock = trio.Lock()
        self._rng = random.Random(f"gossip:{ctx.node_id}")
        self._round_robin = 0
        #: bumped on every change of the history
        self.changed = AsyncValue(0)
        #: nodes outside the layout that exchanged with us (gateways, joining nodes)
        self.contacts: set[str] = set()
        self._publish()

    # -- reading ---------------------------------------------------------------------------

    @property
    def history(self) -> LayoutHistory | None:
        return self._history

    @property
    def fixed(self) -> bool:
        return self._history is None

    def status(self) -> LayoutStatus:
        h = self._history
        if h is None:
            # A fixed layout never changes: settled, every node with an equal role.
            layout = self._ctx.layout
            role = NodeRole(capacity=NOMINAL_CAPACITY)
            return LayoutStatus(
                1,
                [1],
                {n: NodeLayoutState(role, 1, False, 0, 0, 0) for n in layout.nodes},
            )
        current = h.current
        roles = {} if current is None else dict(current.roles)
        nodes: dict[str, NodeLayoutState] = {}
        for node_id in sorted(h.known_nodes()):
            report = h.reports.get(node_id) or NodeReport(0)
            nodes[node_id] = NodeLayoutState(
                roles.get(node_id),
                report.synced,
                h.is_drained(node_id),
                report.to_fetch,
                report.to_hand_off,
                report.bytes_to_move,
            )
        return LayoutStatus(h.version, [v.version for v in h.live], nodes)

    def records(self) -> list[VersionRecord]:
        h = self._history
        return [] if h is None else list(h.records)

    def peers(self) -> set[str]:
        """Every node this one exchanges layouts with (itself excluded)."""
        h = self._history
        known = set(self._seeds) | self.contacts
        if h is not None:
            # A drained node may be switched off: it is not asked (should it come
            # back, it asks us).
            known |= {n for n in h.known_nodes() if not h.is_drained(n)}
        known.discard(self._ctx.node_id)
        return known

    # -- changing --------------------------------------------------------------------------

    async def apply(
        self,
        changes: Mapping[str, NodeRole | None],
        replication_factor: int | None,
        write_quorum: int | None,
    ) -> int:
        """Derive, store and spread the next version; its number.

        The node first compares histories with every peer it can reach, so that it
        derives from the newest version; should another version with the same number
        win meanwhile (applied elsewhere at the same time), ``LayoutError`` says so. A
        gateway (no database) needs at least one node to take the version.
        """
        if self._history is not None:
            with trio.move_on_after(self._ctx.config.rpc_timeout):
                await self.spread_digests()
        async with self._lock:
            h = self._history
            if h is None:
                raise LayoutError(
                    f"the layout of {self._ctx.node_id} is fixed ({self._ctx.layout!r}): "
                    "open the node with a StaticLayout or JoinCluster to change it"
                )
            current = h.current
            if current is None:
                raise LayoutError(f"{self._ctx.node_id} has not learned the cluster's layout yet")
            now = self._ctx.clock.now_msec()
            new = current.derive(
                changes,
                replication_factor=replication_factor,
                write_quorum=write_quorum,
                applied_msec=now,
            )
            await self._store_locked(h.with_version(new, now))
        log.info(
            "%s: applied layout version %d: %d node(s) %s, replication %d, quorum %d",
            self._ctx.node_id,
            new.version,
            len(new.roles),
            ", ".join(new.nodes),
            new.replication_factor,
            new.write_quorum,
        )
        reached = await self.spread()
        if self._db is None and reached == 0:
            raise LayoutError(
                f"version {new.version} reached no storage node: a gateway keeps no layout "
                "of its own, apply again once a node is reachable"
            )
        current = self._history.current if self._history is not None else None
        if current is not None and current.version == new.version and current != new:
            raise LayoutError(
                f"another version {new.version}, applied elsewhere at the same time, won "
                "over this one: read the layout again and apply the changes anew"
            )
        return new.version

    async def adopt(self, other: LayoutHistory, source: str) -> bool:
        """Merge ``other`` (from ``source``) into the history; whether it changed."""
        async with self._lock:
            h = self._history
            if h is None:
                return False
            merged = h.merge(other, self._ctx.clock.now_msec())
            if merged.digest == h.digest:
                return False
            await self._store_locked(merged)
        if merged.version != h.version:
            log.info(
                "%s: layout version %d learned from %s (live: %s)",
                self._ctx.node_id,
                merged.version,
                source,
                ", ".join(str(v.version) for v in merged.live),
            )
        elif [v.version for v in merged.live] != [v.version for v in h.live]:
            log.info(
                "%s: layout versions retired; live now: %s",
                self._ctx.node_id,
                ", ".join(str(v.version) for v in merged.live),
            )
        return True

    async def report(self, **fields: int) -> bool:
        """Replace this node's own report (fields of :class:`NodeReport`); whether its
        synced or drained version changed (then it is spread at once)."""
        async with self._lock:
            h = self._history
            if h is None:
                return False
            me = self._ctx.node_id
            old = h.reports.get(me) or NodeReport(0)
            now = self._ctx.clock.now_msec()
            new = replace(old, **fields)
            if new == old:
                return False
            new = replace(new, seq=h.next_seq(me, now))
            await self._store_locked(h.with_report(me, new, now))
        milestone = (new.synced, new.drained) != (old.synced, old.drained)
        if milestone:
            if new.synced != old.synced:
                log.info("%s: synced to layout version %d", me, new.synced)
            if new.drained and not old.drained:
                log.info("%s: drained (holds no block and no reference): may be removed", me)
            self._ctx.spawn_background("layout spread", self.spread_quietly)
        return milestone

    async def forget(self, node_id: str) -> None:
        """Record an operator's word that ``node_id``, outside every live version, is
        gone for good: it counts as drained from now on, unless it comes back and
        reports otherwise (its own reports are newer)."""
        async with self._lock:
            h = self._history
            if h is None or h.current is None:
                raise LayoutError(f"the layout of {self._ctx.node_id} has no history")
            if node_id in h.live_nodes():
                raise LayoutError(
                    f"{node_id} has a role in a live layout version: remove it "
                    "(apply_layout) and wait for the older versions to retire first"
                )
            if node_id not in h.known_nodes():
                raise LayoutError(f"{node_id} is not a node of the layout history")
            now = self._ctx.clock.now_msec()
            old = h.reports.get(node_id) or NodeReport(0)
            gone = NodeReport(h.next_seq(node_id, now), synced=old.synced, drained=h.version)
            await self._store_locked(h.with_report(node_id, gone, now))
        log.warning(
            "%s: %s forgotten by the operator: counted as drained (whatever it held is "
            "lost with it)",
            self._ctx.node_id,
            node_id,
        )
        self._ctx.spawn_background("layout spread", self.spread_quietly)

    async def _store_locked(self, history: LayoutHistory) -> None:
        if self._db is not None:
            await self._db.save_setting(HISTORY_KEY, history.encode())
        self._history = history
        self._publish()
        self.changed.value += 1

    def _publish(self) -> None:
        """Hand the live layouts to the context, and the roles' addresses to the transport."""
        h = self._history
        if h is None:
            return
        if h.current is not None:
            self._ctx.set_layouts(h.live)
        transport = None if self._ctx.rpc is None else self._ctx.rpc.transport
        add_peer = getattr(transport, "add_peer", None)
        if add_peer is None:
            return
        for version in h.live:
            for node_id, role in version.roles.items():
                if role.address is not None and node_id != self._ctx.node_id:
                    add_peer(node_id, parse_address(role.address))

    # -- exchanging ------------------------------------------------------------------------

    async def exchange(self, peer: str, *, push: bool = False) -> None:
        """Compare histories with ``peer``; each side ends up with the join."""
        rpc, h = self._ctx.rpc, self._history
        if rpc is None or h is None:
            return
        timeout = self._ctx.config.rpc_timeout
        ours = h.encode() if push else None
        theirs_digest, theirs, addresses = await rpc.layout_exchange(
            peer, h.digest, ours, addresses=self.address_book(), background=True, timeout=timeout
        )
        self.learn_addresses(addresses)
        if theirs is not None:
            try:
                other = LayoutHistory.decode(theirs)
            except LayoutError as exc:
                raise ProtocolError(f"{peer} sent a bad layout history: {exc}") from exc
            await self.adopt(other, peer)
        mine = self._history
        if mine is not None and mine.digest != theirs_digest and not push:
            await rpc.layout_exchange(
                peer, mine.digest, mine.encode(), background=True, timeout=timeout
            )

    def address_book(self) -> dict[str, str]:
        """The ``"host:port"`` this node's transport knows for the nodes of its history,
        and its own listening address when it is one others can use."""
        transport = None if self._ctx.rpc is None else self._ctx.rpc.transport
        peers = getattr(transport, "peers", None)
        if not isinstance(peers, Mapping) or self._history is None:
            return {}
        known = self._history.known_nodes()
        book = {n: _format(a) for n, a in peers.items() if n in known}
        own = getattr(transport, "listen_address", None)
        if isinstance(own, tuple) and own[0] not in ("", "0.0.0.0", "::"):
            book[self._ctx.node_id] = _format(own)
        return book

    def learn_addresses(self, addresses: Mapping[str, str]) -> None:
        """Give the transport the addresses of nodes it cannot reach yet (a role's own
        address, from the layout, is never replaced)."""
        transport = None if self._ctx.rpc is None else self._ctx.rpc.transport
        add_peer = getattr(transport, "add_peer", None)
        peers = getattr(transport, "peers", None)
        if add_peer is None or not isinstance(peers, Mapping):
            return
        for node_id, address in addresses.items():
            if node_id == self._ctx.node_id or node_id in peers:
                continue
            try:
                add_peer(node_id, parse_address(address))
            except LayoutError as exc:
                log.debug(
                    "%s: ignored address %r of %s: %s", self._ctx.node_id, address, node_id, exc
                )

    async def serve_exchange(
        self, peer: str, digest: bytes, history: bytes | None, addresses: Mapping[str, str]
    ) -> tuple[bytes, bytes | None, dict[str, str]]:
        """A peer's ``LayoutExchange``: merge what it sent, answer with ours."""
        if self._history is None:
            raise TrioblockError(f"{self._ctx.node_id} has a fixed layout")
        self.learn_addresses(addresses)
        h = self._history
        if peer not in h.known_nodes():
            self.contacts.add(peer)
        if history is not None:
            try:
                other = LayoutHistory.decode(history)
            except LayoutError as exc:
                raise ProtocolError(f"bad layout history from {peer}: {exc}") from exc
            await self.adopt(other, peer)
        h = self._history
        assert h is not None
        mine = h.digest
        return mine, (None if mine == digest else h.encode()), self.address_book()

    async def spread(self) -> int:
        """Push the history to every node this one knows of (failures are left to
        gossip); how many took it."""
        limiter = trio.CapacityLimiter(MAX_SPREAD)
        reached = 0

        async def one(peer: str) -> None:
            nonlocal reached
            async with limiter:
                try:
                    await self.exchange(peer, push=True)
                    reached += 1
                except Exception as exc:  # gossip will try again
                    log.debug("%s: layout push to %s failed: %s", self._ctx.node_id, peer, exc)
                    self.contacts.discard(peer)

        async with trio.open_nursery() as nursery:
            for peer in sorted(self.peers()):
                nursery.start_soon(one, peer)
        return reached

    async def spread_quietly(self) -> None:
        await self.spread()

    async def gossip_once(self) -> None:
        """Exchange digests with the next peer in turn."""
        peers = sorted(self.peers())
        if not peers:
            return
        peer = peers[self._round_robin % len(peers)]
        self._round_robin += 1
        try:
            await self.exchange(peer)
        except Exception as exc:  # unreachable for now: the next round tries another
            log.debug(
                "%s: layout gossip with %s failed: %s", self._ctx.node_id, peer, describe(exc)
            )

    async def run_gossip(self) -> None:
        """Exchange with every known node at start, then with one every interval."""
        if self._history is None or self._ctx.rpc is None:
            return
        async with move_on_when(self._ctx.stopping.wait):
            await self.spread_digests()
            while True:
                await trio.sleep(GOSSIP_INTERVAL * self._rng.uniform(0.5, 1.5))
                await self.gossip_once()

    async def spread_digests(self) -> None:
        async with trio.open_nursery() as nursery:
            for peer in sorted(self.peers()):
                nursery.start_soon(self._quiet_exchange, peer)

    async def _quiet_exchange(self, peer: str) -> None:
        try:
            await self.exchange(peer)
        except Exception as exc:
            log.debug("%s: layout exchange with %s failed: %s", self._ctx.node_id, peer, exc)


def _format(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = [
    "GOSSIP_INTERVAL",
    "HISTORY_KEY",
    "Membership",
    "initial_history",
]
