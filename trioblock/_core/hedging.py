"""When to send a second read request: an adaptive threshold from recent latencies.

A read goes to the best node first; if no answer comes within the threshold, the next
node is asked too and the first valid answer wins. The threshold is twice the 90th
percentile of the last 64 successful peer reads, clamped to [``floor``, ``ceiling``],
so a healthy cluster rarely hedges and a stalled peer costs one threshold, not a full
``rpc_timeout``.
"""

from __future__ import annotations

from collections import deque

WINDOW = 64


class HedgePolicy:
    def __init__(self, *, floor: float = 0.01, ceiling: float = 5.0, initial: float = 0.5) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.initial = initial
        self._samples: deque[float] = deque(maxlen=WINDOW)

    def observe(self, seconds: float) -> None:
        self._samples.append(max(0.0, seconds))

    def threshold(self) -> float:
        if len(self._samples) < 8:
            value = self.initial
        else:
            ordered = sorted(self._samples)
            value = 2 * ordered[int(0.9 * (len(ordered) - 1))]
        return min(self.ceiling, max(self.floor, value))
