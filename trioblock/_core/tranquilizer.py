"""Throttling of background work in proportion to how long the work takes.

After each busy step a worker sleeps ``tranquility × mean(last 30 step durations)``, so a
tranquility of 2 keeps the worker busy about a third of the time whatever the disk's
speed. Pure bookkeeping: the caller measures durations and does the sleeping.
"""

from __future__ import annotations

from collections import deque

WINDOW = 30


class Tranquilizer:
    def __init__(self, window: int = WINDOW) -> None:
        self._durations: deque[float] = deque(maxlen=window)

    def record(self, duration: float) -> None:
        """Add one busy step's duration (seconds; negative counts as zero)."""
        self._durations.append(max(0.0, duration))

    @property
    def average(self) -> float:
        if not self._durations:
            return 0.0
        return sum(self._durations) / len(self._durations)

    def delay(self, tranquility: int) -> float:
        """Seconds to sleep after a busy step."""
        return tranquility * self.average
