"""trioblock's testing kit: public API for our test suites and yours.

- :class:`MemoryNetwork`: in-process streams between the nodes of one ``trio.run``, with
  fault injection (``partition``, ``heal``, ``set_delay``, ``set_drop``,
  ``corrupt_next``);
- :func:`open_cluster`: N nodes over a ``MemoryNetwork`` with ``stop``/``start``/
  ``kill``/``wipe``, and ``await cluster.add_node(node_id)`` for a node that joins (it
  holds no role until ``apply_layout`` gives it one); ``cluster.layout`` is the current
  layout version; with ``disk="simulated"``, ``disk(node_id)`` and
  ``power_loss(node_id)``;
- :class:`SimulatedDisk`: an in-memory disk for a node's block files that loses
  unsynced changes on ``power_loss()`` (kept, dropped or torn, from a seed), fails
  operations on demand (``fail``, with fsyncgate semantics for fsync), fills up
  (``set_capacity``), slows down (``set_latency``) and rots (``rot``); :class:`PowerLoss`
  says what a power loss did;
- :func:`check_transport`: a conformance suite for anyone plugging their own
  :class:`~trioblock.Transport`-compatible transport;
- :func:`run_operations`, :class:`ClusterModel`, :func:`check_converged`: drive a
  cluster with a sequence of operations (``Put``, ``Get``, ``Incref``, ``Decref``,
  ``Stop``, ``Start``, ``Wipe``, ``Isolate``, ``Heal``, ``Corrupt``, ``PowerCut``,
  ``Advance``, ``Settle``: the :data:`Operation` union) against a model of an application that keeps
  its own references with the low-level ``incref``/``decref`` (replaying what a node
  missed) and check the invariants (no referenced block lost, no wrong bytes returned,
  garbage eventually collected);
- :mod:`trioblock.testing.strategies` (needs hypothesis): ``block_contents()`` and
  ``cluster_operations(node_ids)``;
- :mod:`trioblock.testing.stateful` (needs hypothesis): ``ReferenceMachine``, a
  ``RuleBasedStateMachine`` driving cluster references through crashes, wipes,
  partitions and restarts; ``MembershipMachine``, the same with nodes joining, removed
  and replaced after a crash (``add_node``, ``remove_node``, ``replace_node``), whose
  checks also wait for the layout change to settle and find removed nodes drained; and
  ``ClusterThread``, which keeps a cluster alive across the rules of a state machine.

Everything here runs under ``trio.testing.MockClock(autojump_threshold=0)``, which
turns minutes of GC delays and back-offs into milliseconds.
"""

from __future__ import annotations

from ._cluster import Cluster as Cluster
from ._cluster import open_cluster as open_cluster
from ._conformance import check_transport as check_transport
from ._memory import MemoryNetwork as MemoryNetwork
from ._model import Advance as Advance
from ._model import ClusterModel as ClusterModel
from ._model import Corrupt as Corrupt
from ._model import Decref as Decref
from ._model import Get as Get
from ._model import Heal as Heal
from ._model import Incref as Incref
from ._model import Isolate as Isolate
from ._model import Operation as Operation
from ._model import PowerCut as PowerCut
from ._model import Put as Put
from ._model import Settle as Settle
from ._model import Start as Start
from ._model import Stop as Stop
from ._model import Wipe as Wipe
from ._model import check_converged as check_converged
from ._model import run_operations as run_operations
from ._model import settle as settle
from ._simdisk import SimulatedDisk as SimulatedDisk
from ._simfs import PowerLoss as PowerLoss

__all__ = [
    "Advance",
    "Cluster",
    "ClusterModel",
    "Corrupt",
    "Decref",
    "Get",
    "Heal",
    "Incref",
    "Isolate",
    "MemoryNetwork",
    "Operation",
    "PowerCut",
    "PowerLoss",
    "Put",
    "Settle",
    "SimulatedDisk",
    "Start",
    "Stop",
    "Wipe",
    "check_converged",
    "check_transport",
    "open_cluster",
    "run_operations",
    "settle",
]
