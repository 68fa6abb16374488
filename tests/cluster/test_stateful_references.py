"""Cluster references as a hypothesis state machine (``trioblock.testing.stateful``).

CI runs a derandomized, smaller count; ``TRIOBLOCK_STATEFUL_EXAMPLES=2000`` for a soak.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from trioblock.testing.stateful import ReferenceMachine

EXAMPLES = int(os.environ.get("TRIOBLOCK_STATEFUL_EXAMPLES", "60"))


@pytest.mark.slow
class TestReferences(ReferenceMachine.TestCase):  # type: ignore[name-defined]
    """Every storage node counts exactly the alive owners; every referenced block is
    stored by its storage nodes and readable from every node and the gateway."""

    settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
