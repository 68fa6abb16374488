"""Counters and durations kept by a node (``BlockManager.metrics``).

Plain attributes, cheap to bump from the Trio thread; exported in Prometheus text form by
the metrics edge. Durations keep a count, a sum, a maximum and a histogram (seconds).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, fields
from typing import Final

#: Upper bounds (seconds, inclusive) of the buckets of every duration's histogram; a
#: last, unbounded bucket holds what took longer.
DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass
class Duration:
    """How long something took, over every time it happened: count, total and longest
    (seconds); ``mean`` is total / count (0 when it never happened). ``buckets`` counts
    the occurrences per bucket, from 1 ms to 30 s (each one in the first bucket whose
    bound it does not exceed; those longer than 30 s in none); :meth:`cumulative` gives
    them with their bounds, as a Prometheus histogram does."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))

    def observe(self, seconds: float) -> None:
        """Record one occurrence that took ``seconds``."""
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)
        index = bisect_left(DURATION_BUCKETS, seconds)
        if index < len(self.buckets):
            self.buckets[index] += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(bound, occurrences that took at most bound)`` for each bucket, and
        ``(inf, count)`` last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip(DURATION_BUCKETS, self.buckets, strict=True):
            running += n
            out.append((bound, running))
        out.append((float("inf"), self.count))
        return out

    @property
    def mean(self) -> float:
        """Mean seconds (0 when it never happened)."""
        return self.total / self.count if self.count else 0.0


@dataclass
class Metrics:
    """What a node has done since it opened (``BlockManager.metrics``).

    Counters (since the node opened): ``bytes_read`` (plaintext bytes of blocks read, local
    copies and peers), ``bytes_written`` (bytes of blocks written to this node's data
    directories), ``corruptions`` (copies that failed verification), ``read_errors``
    (local copies the disk could not read: the read went on to peers), ``deletes``
    (unreferenced blocks deleted by the garbage collector), ``resyncs`` / ``resync_errors``
    (resync steps completed / failed), ``resync_sent`` (blocks sent to peers that needed
    them before a local delete), ``resync_received`` (missing blocks fetched from peers),
    ``puts`` / ``gets`` (this node's own ``put_block`` / ``get_block`` and ``stream_block``
    calls; each block of a ``put_blocks`` counts as one put), ``puts_served`` /
    ``gets_served`` (blocks this node stored / sent for peers: a gateway's or another
    node's put or read, a peer's resync fetch, offloads and hand-offs),
    ``write_trips`` (worker-thread trips that wrote blocks for puts and peers: the writes
    waiting at the same moment share one, with one fsync per directory touched),
    ``hedged_reads`` (reads that started a second request because the first was slow);
    reference anti-entropy: ``ref_sync_passes`` (passes completed), ``ref_entries_pulled`` /
    ``ref_entries_pushed`` (reference entries merged here from peers / sent to peers that
    lacked them), ``ref_tombstones_collected`` (tombstones dropped once every storage node
    held them), ``ref_missing_queued`` (referenced blocks without a local copy queued for
    fetching), ``ref_sync_peer_failures`` (peers a pass could not sync with).

    Durations (count, total, longest and a histogram, in seconds): ``read_duration``,
    ``write_duration``, ``resync_duration``.
    """

    bytes_read: int = 0
    bytes_written: int = 0
    corruptions: int = 0
    read_errors: int = 0
    deletes: int = 0
    resyncs: int = 0
    resync_errors: int = 0
    resync_sent: int = 0
    resync_received: int = 0
    puts: int = 0
    gets: int = 0
    puts_served: int = 0
    gets_served: int = 0
    write_trips: int = 0
    hedged_reads: int = 0
    ref_sync_passes: int = 0
    ref_entries_pulled: int = 0
    ref_entries_pushed: int = 0
    ref_tombstones_collected: int = 0
    ref_missing_queued: int = 0
    ref_sync_peer_failures: int = 0
    read_duration: Duration = field(default_factory=Duration)
    write_duration: Duration = field(default_factory=Duration)
    resync_duration: Duration = field(default_factory=Duration)

    def counters(self) -> dict[str, int]:
        """Every counter by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", int)}

    def durations(self) -> dict[str, Duration]:
        """Every duration by name."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.type in ("Duration", Duration)
        }
