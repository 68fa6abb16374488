"""Counters and durations kept by a node (``BlockManager.metrics``).

Plain attributes, cheap to bump from the Trio thread; exported in Prometheus text form by
the metrics edge. Durations keep a count, a sum and a maximum (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class Duration:
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass
class Metrics:
    """What a node has done since it opened."""

    bytes_read: int = 0
    bytes_written: int = 0
    corruptions: int = 0
    deletes: int = 0
    resyncs: int = 0
    resync_errors: int = 0
    resync_sent: int = 0
    resync_received: int = 0
    puts: int = 0
    gets: int = 0
    hedged_reads: int = 0
    read_duration: Duration = field(default_factory=Duration)
    write_duration: Duration = field(default_factory=Duration)
    resync_duration: Duration = field(default_factory=Duration)

    def counters(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", int)}

    def durations(self) -> dict[str, Duration]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.type in ("Duration", Duration)
        }
