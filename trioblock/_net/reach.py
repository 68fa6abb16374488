"""Which peers this node could not reach, and the moment one answers again.

The connection pool reports every connection it fails to open (the peer down,
partitioned, or too slow to shake hands) and every one it opens; the server reports
every peer that completes a handshake with this node. A peer that failed and then
answers, either way, is counted in :attr:`Reachability.returned` and listed by
:meth:`Reachability.take_returned`: the node's background work uses it to retry at
once what failed for want of that peer (a resync backed off for minutes while a
partition lasted) rather than at the end of its back-off.
"""

from __future__ import annotations

from trio_util import AsyncValue


class Reachability:
    """Peers marked unreachable, and those that answered again since last asked."""

    def __init__(self) -> None:
        self._down: set[str] = set()
        self._returned: set[str] = set()
        #: grows by one each time a peer marked unreachable answers again
        self.returned: AsyncValue[int] = AsyncValue(0)

    def unreachable(self, peer: str) -> None:
        """A connection to ``peer`` could not be opened."""
        self._down.add(peer)

    def reached(self, peer: str) -> None:
        """``peer`` answered: a connection to it opened, or it shook hands with us."""
        if peer in self._down:
            self._down.discard(peer)
            self._returned.add(peer)
            self.returned.value += 1

    def take_returned(self) -> list[str]:
        """The peers that answered again since the last call, sorted."""
        returned, self._returned = sorted(self._returned), set()
        return returned


__all__ = ["Reachability"]
