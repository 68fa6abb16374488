"""Cluster references as a hypothesis state machine on simulated disks, with power cuts:
``ReferenceMachine`` with ``CLUSTER`` set to simulated disks and ``data_fsync``.

CI runs a derandomized, smaller count; ``TRIOBLOCK_STATEFUL_EXAMPLES`` scales it.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings

from trioblock.testing.stateful import ReferenceMachine

EXAMPLES = max(5, int(os.environ.get("TRIOBLOCK_STATEFUL_EXAMPLES", "60")) // 4)


class PowerCutMachine(ReferenceMachine):
    CLUSTER: ClassVar[dict[str, Any]] = {
        **ReferenceMachine.CLUSTER,
        "disk": "simulated",
        "data_fsync": True,
    }


class TestPowerCuts(PowerCutMachine.TestCase):  # type: ignore[name-defined]
    """Every storage node counts exactly the alive owners; every referenced block is
    stored by its storage nodes and readable everywhere, through power cuts."""

    settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_the_default_machine_runs_on_the_real_disk_without_power_cuts() -> None:
    assert "disk" not in ReferenceMachine.CLUSTER
    assert PowerCutMachine.CLUSTER["disk"] == "simulated"


def test_the_disk_fault_rules_fail_a_node_s_writes_and_check_heals_them() -> None:
    machine = PowerCutMachine()
    try:
        h = machine.first_block(b"written while n1's disk fails" * 40)
        machine.disk_fault(1, "write", 3)
        machine.fill_disk(2, 0)
        machine.add_reference(h, 0)  # n0 and a failing n1 or a full n2: a quorum or not
        cluster = machine.env.cluster
        assert cluster is not None
        assert [op for op, _path, _code in cluster.disk("n1").injected] == ["write"]
        assert cluster.disk("n2").statvfs(str(cluster.data_dir("n2"))).free == 0
        machine.power_cut(0)
        machine.check()  # faults lifted, the reference retried, every copy back
        assert cluster.disk("n2").statvfs(str(cluster.data_dir("n2"))).free > 0
    finally:
        machine.teardown()
