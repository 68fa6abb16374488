"""Membership change as a hypothesis state machine (``trioblock.testing.stateful``).

CI runs a derandomized, smaller count; ``TRIOBLOCK_STATEFUL_EXAMPLES=500`` for a soak.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from trioblock.testing.stateful import MembershipMachine

EXAMPLES = int(os.environ.get("TRIOBLOCK_STATEFUL_EXAMPLES", "10"))


@pytest.mark.slow
class TestMembership(MembershipMachine.TestCase):  # type: ignore[name-defined]
    """References and blocks survive nodes joining, leaving and being replaced; nodes
    without a role end up drained."""

    settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
