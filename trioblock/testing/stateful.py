"""A hypothesis state machine for cluster references, for our test suite and yours.

:class:`ReferenceMachine` is a ``hypothesis.stateful.RuleBasedStateMachine`` whose rules
are what an application does — put a block and reference it, reference it again, remove
a reference, through any running node or a gateway — while the cluster underneath is
stopped, crashed, restarted, wiped and partitioned, and time passes; on simulated disks
(a subclass setting ``CLUSTER = {**ReferenceMachine.CLUSTER, "disk": "simulated",
"data_fsync": True}``) nodes also lose power (``power_cut``) and their disks fail
reads, writes and fsyncs and fill up (``disk_fault``, ``fill_disk``, ``free_disks``:
see ``_diskrules``). The application never replays anything: an update that failed
(no quorum, a disk error) is simply retried later, as any application retries a write.

The ``check`` rule (and the end of every example) heals the cluster, lets anti-entropy
and resync run, and asserts, for every block: each storage node's refcount equals the
number of alive owners; every block with an alive owner is stored by each of its storage
nodes and reads back with the right bytes from every node and from the gateway.

:class:`MembershipMachine` adds membership change: nodes join (``add_node``), are
removed (``remove_node``) and are replaced after a crash (``replace_node``), while the
rules above go on; its ``check`` also waits for the change to settle and asserts that
every node without a role that still runs is drained (no block copy, no reference row).

Run them with pytest::

    from trioblock.testing.stateful import MembershipMachine, ReferenceMachine

    TestReferences = ReferenceMachine.TestCase
    TestMembership = MembershipMachine.TestCase

or subclass it to add rules of your own (``self.env.run(fn)`` runs ``await fn(cluster)``
in the cluster's Trio loop). The cluster lives in a Trio loop on a helper thread
(:class:`ClusterThread`) under a ``MockClock``: time only moves while a rule runs, and
stands still between rules. Requires hypothesis (``pip install trioblock[testing]``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import trio
import trio.testing
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, precondition, rule

from .._core.hashing import Hash, blake2sum
from .._core.layoutversion import NodeRole
from .._node import BlockManager
from ..errors import (
    DiskError,
    LayoutError,
    MissingBlockError,
    QuorumError,
    StaleLayoutError,
    TrioblockError,
)
from ._cluster import Cluster, open_cluster
from ._diskrules import DiskFaultRules

T = TypeVar("T")
NODES = ["n0", "n1", "n2"]
GATEWAY = "app"
GC_DELAY = 120.0
RPC_TIMEOUT = 10.0


class ClusterThread:
    """A 3-node cluster and a gateway in a Trio loop on a helper thread.

    ``run(fn)`` runs ``await fn(cluster)`` in that loop and returns its result; virtual
    time (a ``MockClock``) moves only during such calls. ``close()`` stops everything
    and removes the cluster's directories. ``overrides`` are ``Config`` fields.
    """

    def __init__(self, **overrides: Any) -> None:
        self.clock = trio.testing.MockClock(autojump_threshold=float("inf"))
        self.root = tempfile.mkdtemp(prefix="trioblock-refs-")
        self.cluster: Cluster | None = None
        self.gateway: BlockManager | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._overrides = overrides
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with (
                open_cluster(self.root, n=len(NODES), **self._overrides) as cluster,
                cluster.open_gateway(GATEWAY) as gateway,
            ):
                self.cluster, self.gateway = cluster, gateway
                self._ready.set()
                await self._stop.wait()

        try:
            trio.run(main, clock=self.clock)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    def run(self, fn: Callable[[Cluster], Awaitable[T]]) -> T:
        """Run ``fn(cluster)`` in the cluster's loop; time moves only meanwhile."""

        async def call() -> T:
            assert self.cluster is not None
            self.clock.autojump_threshold = 0
            try:
                return await fn(self.cluster)
            finally:
                self.clock.autojump_threshold = float("inf")

        if self._failure is not None:
            raise self._failure
        return trio.from_thread.run(call, trio_token=self._token)

    def close(self) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            stop = self._stop

            def stop_now() -> None:
                self.clock.autojump_threshold = 0  # shutting down may wait on timers
                stop.set()

            trio.from_thread.run_sync(stop_now, trio_token=self._token)
        self._thread.join(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._failure is not None:
            raise self._failure


class ReferenceMachine(DiskFaultRules, RuleBasedStateMachine):
    """Cluster references under crashes, wipes, partitions and restarts (see above)."""

    blocks = Bundle("blocks")
    refs = Bundle("refs")

    #: ``open_cluster`` options of the cluster under test. No fsync by default: what is
    #: checked then is the logic, not durability against power loss.
    CLUSTER: ClassVar[dict[str, Any]] = {
        "gc_delay": GC_DELAY,
        "rpc_timeout": RPC_TIMEOUT,
        "data_fsync": False,
        "metadata_fsync": False,
    }

    def __init__(self) -> None:
        super().__init__()
        self.env = ClusterThread(**self.CLUSTER)
        self.data: dict[Hash, bytes] = {}
        #: owners whose add committed, and owners removed (remove wins for ever)
        self.alive: dict[Hash, set[str]] = {}
        self.removed: dict[Hash, set[str]] = {}
        #: updates that failed and are to be retried: (hash, owner, deleted)
        self.pending: list[tuple[Hash, str, bool]] = []
        self.down: set[str] = set()
        #: the cluster's nodes that may run (a node replaced after a crash never does)
        self.members: list[str] = list(NODES)
        self.partitioned = False
        self.owners = 0
        #: a node was wiped since the cluster last converged (losing a second disk
        #: before the first one is repaired may lose data: that is no bug)
        self.wiped = False

    def teardown(self) -> None:
        try:
            if self.env.cluster is not None:
                self.check()  # the end state must hold the invariants too
        finally:
            self.env.close()

    # -- helpers -------------------------------------------------------------------------

    def _via(self, index: int) -> str:
        """A running node, or the gateway (index 3)."""
        if index == 3:
            return GATEWAY
        up = [n for n in self.members if n not in self.down]
        return up[index % len(up)]

    def _member(self, index: int) -> str:
        return self.members[index % len(self.members)]

    def _client(self, cluster: Cluster, via: str) -> BlockManager:
        if via == GATEWAY:
            assert self.env.gateway is not None
            return self.env.gateway
        return cluster.nodes[via]

    def _record(self, h: Hash, owner: str, deleted: bool) -> None:
        if deleted:
            self.removed.setdefault(h, set()).add(owner)
            self.alive.get(h, set()).discard(owner)
        elif owner not in self.removed.get(h, set()):
            self.alive.setdefault(h, set()).add(owner)

    def _update(self, h: Hash, owner: str, deleted: bool, via: str) -> None:
        data = self.data[h]

        async def go(cluster: Cluster) -> bool:
            bm = self._client(cluster, via)
            try:
                if not deleted:
                    await bm.put_block(data)  # put, then reference (as an application does)
                    try:
                        await bm.add_reference(h, owner)
                    except MissingBlockError:
                        # The nodes that acknowledged lack the block (wiped or crashed
                        # since the put): recorded all the same; put it again, as the
                        # docs tell an application to.
                        await bm.put_block(data)
                else:
                    await bm.remove_reference(h, owner)
            except (QuorumError, StaleLayoutError, DiskError):
                return False
            return True

        if self.env.run(go):
            self._record(h, owner, deleted)
        else:
            # Partly applied, perhaps: the application retries it later.
            self.pending.append((h, owner, deleted))
            if deleted:
                self.alive.get(h, set()).discard(owner)  # unknown until retried

    # -- rules -----------------------------------------------------------------------------

    @initialize(target=blocks, data=st.binary(min_size=1, max_size=2048))
    def first_block(self, data: bytes) -> Hash:
        return self._remember(data)

    @rule(target=blocks, data=st.binary(min_size=1, max_size=2048))
    def new_block(self, data: bytes) -> Hash:
        """Content the application will store (it is put with its first reference)."""
        return self._remember(data)

    def _remember(self, data: bytes) -> Hash:
        h = blake2sum(data)
        self.data[h] = data
        return h

    @rule(target=refs, h=blocks, via=st.integers(0, 3))
    def add_reference(self, h: Hash, via: int) -> tuple[Hash, str]:
        # Owners are unique per referrer (as object version ids are): a removed pair is
        # never added again by the application.
        self.owners += 1
        owner = f"owner-{self.owners}"
        self._update(h, owner, False, self._via(via))
        return h, owner

    @rule(ref=refs, via=st.integers(0, 3))
    def add_again(self, ref: tuple[Hash, str], via: int) -> None:
        """A retried or replayed add: idempotent (a removed pair stays removed)."""
        h, owner = ref
        if owner not in self.removed.get(h, set()):
            self._update(h, owner, False, self._via(via))

    @rule(ref=refs, via=st.integers(0, 3))
    def remove_reference(self, ref: tuple[Hash, str], via: int) -> None:
        h, owner = ref
        self._update(h, owner, True, self._via(via))

    @precondition(lambda self: not self.down and not self.wiped)
    @rule(index=st.integers(0, 7), crash=st.booleans())
    def stop_node(self, index: int, crash: bool) -> None:
        node = self._member(index)

        async def go(cluster: Cluster) -> None:
            await (cluster.kill(node) if crash else cluster.stop(node))

        self.env.run(go)
        self.down.add(node)

    @precondition(lambda self: bool(self.down))
    @rule()
    def start_nodes(self) -> None:
        async def go(cluster: Cluster) -> None:
            for node in sorted(self.down):
                await cluster.start(node)

        self.env.run(go)
        self.down.clear()

    @precondition(lambda self: not self.down and not self.wiped)
    @rule(index=st.integers(0, 7))
    def wipe_node(self, index: int) -> None:
        node = self._member(index)

        async def go(cluster: Cluster) -> None:
            await cluster.wipe(node)

        self.env.run(go)
        self.wiped = True

    @rule(index=st.integers(0, 7))
    def partition(self, index: int) -> None:
        node = self._member(index)

        async def go(cluster: Cluster) -> None:
            cluster.net.partition([node], [n for n in cluster.node_ids if n != node])

        self.env.run(go)
        self.partitioned = True

    @rule(seconds=st.sampled_from([1.0, 15.0, 70.0, 150.0]))
    def advance(self, seconds: float) -> None:
        async def go(cluster: Cluster) -> None:
            await trio.sleep(seconds)

        self.env.run(go)

    @rule()
    def check(self) -> None:
        async def heal(cluster: Cluster) -> None:
            cluster.net.heal()
            for node in self.members:
                if node not in cluster.nodes:
                    await cluster.start(node)
            self.heal_disks(cluster)

        self.env.run(heal)
        self.down.clear()
        self.partitioned = False
        pending, self.pending = self.pending, []
        for h, owner, deleted in pending:
            self._update(h, owner, deleted, self.members[0])
        assert not self.pending, "an update failed with every node up"

        async def converge(cluster: Cluster) -> None:
            await self.settle(cluster)
            for _ in range(2):
                for node in self.members:
                    await cluster.nodes[node].sync_references()
            await trio.sleep(2 * RPC_TIMEOUT + 5)  # resync fetches what a node lacks

        self.env.run(converge)

        async def verify(cluster: Cluster) -> list[str]:
            problems = []
            for h, data in self.data.items():
                owners = len(self.alive.get(h, set()))
                for node in cluster.layout.storage_nodes(h):
                    bm = cluster.nodes[node]
                    rc = bm.get_block_rc(h)
                    if rc != owners:
                        problems.append(f"{node}: rc of {h.short()} is {rc}, {owners} alive")
                    if owners and not await bm.has_local_block(h):
                        problems.append(f"{node}: referenced {h.short()} not stored")
                if owners:
                    for node in [*self.members, GATEWAY]:
                        try:
                            got = await self._client(cluster, node).get_block(h)
                        except TrioblockError as exc:
                            problems.append(f"{node}: get {h.short()} failed: {exc!r}")
                        else:
                            if got != data:
                                problems.append(f"{node}: wrong bytes for {h.short()}")
            return problems

        problems = self.env.run(verify)
        problems += self.env.run(self.verify_drained)
        assert not problems, "\n".join(problems)
        self.wiped = False

    async def settle(self, cluster: Cluster) -> None:
        """Wait until a layout change is over (nothing to wait for without one)."""

    async def verify_drained(self, cluster: Cluster) -> list[str]:
        """Problems with nodes that hold no role (none without membership change)."""
        return []


class MembershipMachine(ReferenceMachine):
    """:class:`ReferenceMachine` with nodes joining, leaving and replaced while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.added = 0
        #: a node was replaced after a crash: a second one would be a second lost disk
        self.replaced = False

    def _roles(self) -> list[str]:
        assert self.env.cluster is not None
        return list(self.env.cluster.layout.nodes)

    def _apply(self, changes: dict[str, NodeRole | None], via: int) -> None:
        async def go(cluster: Cluster) -> None:
            up = [n for n in self.members if n not in self.down]
            # A refused change (say, too few nodes left) stores nothing: nothing to do.
            with contextlib.suppress(LayoutError):
                await cluster.nodes[up[via % len(up)]].apply_layout(changes)

        self.env.run(go)

    def _new_node(self) -> str:
        self.added += 1
        node = f"m{self.added}"

        async def go(cluster: Cluster) -> None:
            await cluster.add_node(node)

        self.env.run(go)
        self.members.append(node)
        return node

    @precondition(lambda self: len(self.members) < 7 and not self.wiped)
    @rule(zone=st.sampled_from(["", "a", "b"]), weight=st.integers(1, 3), via=st.integers(0, 6))
    def add_node(self, zone: str, weight: int, via: int) -> None:
        """A node joins and a layout version gives it a role."""
        node = self._new_node()
        self._apply({node: NodeRole(zone=zone, capacity=weight << 40)}, via)

    @precondition(lambda self: not self.wiped)
    @rule(index=st.integers(0, 7), via=st.integers(0, 6))
    def remove_node(self, index: int, via: int) -> None:
        """A layout version takes a node's role away (it keeps running and drains)."""
        roles = self._roles()
        if len(roles) > 3:
            self._apply({roles[index % len(roles)]: None}, via)

    @precondition(lambda self: not self.down and not self.wiped and not self.replaced)
    @rule(index=st.integers(0, 7), via=st.integers(0, 6))
    def replace_node(self, index: int, via: int) -> None:
        """A node with a role crashes for good; a new node takes its place."""
        roles = [n for n in self._roles() if n in self.members]
        if not roles:
            return
        victim = roles[index % len(roles)]

        async def go(cluster: Cluster) -> None:
            await cluster.kill(victim)

        self.env.run(go)
        self.members.remove(victim)
        self.replaced = True
        node = self._new_node()
        self._apply({victim: None, node: NodeRole(capacity=1 << 40)}, via)

    async def settle(self, cluster: Cluster) -> None:
        with trio.fail_after(3600):
            while True:
                statuses = [cluster.nodes[n].layout_status() for n in self.members]
                if self._settled(cluster, statuses):
                    return
                await trio.sleep(5.0)

    def _settled(self, cluster: Cluster, statuses: list[Any]) -> bool:
        if len({s.version for s in statuses}) != 1:
            return False
        for s in statuses:
            if len(s.live_versions) != 1:
                return False
            for node, state in s.nodes.items():
                if state.role is not None and state.synced_version < s.version:
                    return False
                if state.role is None and node in self.members and not state.drained:
                    return False
        return True

    async def verify_drained(self, cluster: Cluster) -> list[str]:
        await trio.sleep(GC_DELAY + 30)  # copies handed off are deleted after the offload
        await self.settle(cluster)
        problems = []
        roles = set(cluster.layout.nodes)
        for node in self.members:
            if node in roles:
                continue
            bm = cluster.nodes[node]
            if bm.ref_len() or bm.stored().blocks:
                problems.append(
                    f"{node} (no role) holds {bm.ref_len()} reference rows and "
                    f"{bm.stored().blocks} block copies"
                )
        return problems


__all__ = ["ClusterThread", "MembershipMachine", "ReferenceMachine"]
