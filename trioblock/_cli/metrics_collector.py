"""What a node's Prometheus metrics say: :class:`NodeCollector`, a ``prometheus_client``
custom collector that reads the node at scrape time (``bm.metrics``, queue and error
lengths, workers, scrub status, RPC statistics, data directory space and health), and
:func:`render_metrics`, the text exposition served by :mod:`.metrics_http`.

Rules kept here:

- The exposition is generated on the Trio thread (it only reads counters and runs the
  same ``count(*)`` queries as ``trioblock status``); the one blocking call, the
  free-space lookup of the data directories, runs in a worker thread before each scrape.
- Names follow Prometheus' conventions: durations are histograms, the start time is a
  timestamp (``process_start_time_seconds``, ``trioblock_node_start_time_seconds``), the
  version is ``trioblock_build_info``. The names they replaced (:data:`DEPRECATED`) are
  still exported for one release. The list of metrics and their meaning is in
  ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._core.dirhealth import DataDirState
from .admin_service import data_dir_usage, reference_rows
from .layout_admin import is_fixed

if TYPE_CHECKING:
    from .._node import BlockManager

#: Worker states reported by ``trioblock_worker_state`` (one series per state).
WORKER_STATES: Final = ("busy", "throttled", "idle", "done")
#: Scrub states reported by ``trioblock_scrub_state``.
SCRUB_STATES: Final = ("running", "paused", "finished", "idle")
#: Metrics kept for one release under their old names, each with what replaces it.
DEPRECATED: Final = {
    "trioblock_uptime_seconds": "trioblock_node_start_time_seconds",
    "trioblock_read_duration_max_seconds": "trioblock_read_duration_seconds (histogram)",
    "trioblock_write_duration_max_seconds": "trioblock_write_duration_seconds (histogram)",
    "trioblock_resync_duration_max_seconds": "trioblock_resync_duration_seconds (histogram)",
}


def trioblock_version() -> str:
    """The installed trioblock's version (``0+unknown`` when not installed)."""
    try:
        return metadata.version("trioblock")
    except metadata.PackageNotFoundError:
        return "0+unknown"


_COUNTER_HELP: Final = {
    "bytes_read": "Plaintext bytes of blocks read (local copies and peers).",
    "bytes_written": "Bytes of blocks written to this node's data directories.",
    "corruptions": "Block copies that failed verification.",
    "read_errors": "Local copies the disk could not read (the read went on to peers).",
    "deletes": "Unreferenced blocks deleted by the garbage collector.",
    "resyncs": "Resync steps completed.",
    "resync_errors": "Resync steps that failed.",
    "resync_sent": "Blocks sent to peers that needed them before a local delete.",
    "resync_received": "Missing blocks fetched from peers by the resync.",
    "puts": "Blocks put (put_block calls and each block of put_blocks).",
    "gets": "get_block calls.",
    "puts_served": "Blocks stored here for peers (PutBlock requests served).",
    "gets_served": "Blocks sent to peers (GetBlock requests served).",
    "write_trips": "Worker-thread trips that wrote blocks (concurrent writes share one).",
    "hedged_reads": "Reads that started a second request because the first was slow.",
    "ref_sync_passes": "Reference anti-entropy passes completed.",
    "ref_entries_pulled": "Reference entries merged here from peers by anti-entropy.",
    "ref_entries_pushed": "Reference entries sent by anti-entropy to peers that lacked them.",
    "ref_tombstones_collected": "Reference tombstones dropped once every storage node held them.",
    "ref_missing_queued": "Referenced blocks without a local copy queued for fetching.",
    "ref_sync_peer_failures": "Peers a reference anti-entropy pass could not sync with.",
}


#: The values of ``trioblock_data_dir_state``'s ``state`` label.
DIR_STATES = tuple(s.value for s in DataDirState)


class NodeCollector:
    """Reads a node's state at each scrape (a ``prometheus_client`` custom collector)."""

    def __init__(self, bm: BlockManager) -> None:
        self.bm = bm
        #: Free space per data directory, refreshed (in a thread) before each scrape.
        self.disk: list[dict[str, Any]] = []
        #: When the node opened (Unix time), fixed once so that scrapes agree.
        self.started_at = time.time() - bm.uptime()
        self.version = trioblock_version()

    def collect(self) -> Iterator[Metric]:
        bm = self.bm
        info = GaugeMetricFamily("trioblock_node_info", "This node's id.", labels=["node_id"])
        info.add_metric([bm.node_id], 1)
        yield info
        build = GaugeMetricFamily(
            "trioblock_build_info",
            "Always 1: the trioblock and Python versions the node runs.",
            labels=["version", "python_version"],
        )
        build.add_metric([self.version, platform.python_version()], 1)
        yield build
        yield GaugeMetricFamily(
            "trioblock_node_start_time_seconds",
            "When the node opened (Unix time).",
            value=self.started_at,
        )
        yield GaugeMetricFamily(
            "trioblock_uptime_seconds",
            "DEPRECATED (use trioblock_node_start_time_seconds): seconds since the node opened.",
            value=bm.uptime(),
        )
        yield from self._counters()
        yield from self._queues()
        yield from self._stored()
        yield from self._layout()
        yield from self._workers()
        yield from self._scrub()
        yield from self._rpc()
        yield from self._disk()

    def _counters(self) -> Iterator[Metric]:
        for name, value in self.bm.metrics.counters().items():
            yield CounterMetricFamily(
                f"trioblock_{name}", _COUNTER_HELP.get(name, name.replace("_", " ")), value=value
            )
        for name, duration in self.bm.metrics.durations().items():
            what = name.removesuffix("_duration")
            yield HistogramMetricFamily(
                f"trioblock_{what}_duration_seconds",
                f"Duration of block {what}s.",
                buckets=[(_le(bound), n) for bound, n in duration.cumulative()],
                sum_value=duration.total,
            )
            yield GaugeMetricFamily(
                f"trioblock_{what}_duration_max_seconds",
                f"DEPRECATED (use the trioblock_{what}_duration_seconds histogram): "
                f"longest block {what} since the node opened.",
                value=duration.max,
            )

    def _queues(self) -> Iterator[Metric]:
        bm = self.bm
        yield GaugeMetricFamily(
            "trioblock_rc_entries", "Rows of the reference-count table.", value=bm.rc_len()
        )
        yield GaugeMetricFamily(
            "trioblock_resync_queue_length",
            "Entries in the resync queue.",
            value=bm.resync_queue_len(),
        )
        yield GaugeMetricFamily(
            "trioblock_resync_error_blocks",
            "Blocks whose resync failed and waits for a retry (trioblock errors).",
            value=bm.resync_errors_len(),
        )
        yield GaugeMetricFamily(
            "trioblock_resync_workers", "Configured resync workers.", value=bm.resync_workers
        )
        yield GaugeMetricFamily(
            "trioblock_resync_tranquility",
            "Resync tranquility.",
            value=bm.resync_tranquility,
        )

    def _stored(self) -> Iterator[Metric]:
        bm = self.bm
        stored = bm.stored()
        yield GaugeMetricFamily(
            "trioblock_stored_blocks",
            "Block copies in this node's data directories.",
            value=stored.blocks,
        )
        yield GaugeMetricFamily(
            "trioblock_stored_bytes",
            "Bytes of the block copies in this node's data directories (as stored).",
            value=stored.bytes,
        )
        yield GaugeMetricFamily(
            "trioblock_stored_exact",
            "1 once the stored figures are exact, 0 while the count made at start runs.",
            value=1 if stored.exact else 0,
        )
        rows = reference_rows(bm)
        if rows is not None:
            yield GaugeMetricFamily(
                "trioblock_ref_entries",
                "Rows of the reference table (block, owner), tombstones included.",
                value=rows,
            )

    def _layout(self) -> Iterator[Metric]:
        status = self.bm.layout_status()
        mine = status.nodes.get(self.bm.node_id)
        yield GaugeMetricFamily(
            "trioblock_layout_version",
            "The current cluster layout version (0: none learned yet).",
            value=status.version,
        )
        yield GaugeMetricFamily(
            "trioblock_layout_live_versions",
            "Layout versions still in use (more than 1 while blocks move).",
            value=len(status.live_versions),
        )
        yield GaugeMetricFamily(
            "trioblock_layout_settled",
            "1 once every node with a role is synced to the current version and every "
            "other node drained, as this node knows (always 1 for a fixed layout).",
            value=1 if status.settled or is_fixed(self.bm) else 0,
        )
        yield GaugeMetricFamily(
            "trioblock_layout_synced_version",
            "The newest layout version this node holds every block and reference of.",
            value=0 if mine is None else mine.synced_version,
        )
        yield GaugeMetricFamily(
            "trioblock_layout_blocks_to_move",
            "Blocks this node has left to fetch or hand off (its last report).",
            value=0 if mine is None else mine.blocks_to_fetch + mine.blocks_to_hand_off,
        )
        yield GaugeMetricFamily(
            "trioblock_layout_bytes_to_move",
            "Bytes this node has left to move (its last report).",
            value=0 if mine is None else mine.bytes_to_move,
        )

    def _workers(self) -> Iterator[Metric]:
        labels = ["worker"]
        state = GaugeMetricFamily(
            "trioblock_worker_state",
            "1 for the state a background worker is in, 0 for the others.",
            labels=["worker", "state"],
        )
        errors = CounterMetricFamily(
            "trioblock_worker_errors", "Failed units of work of a worker.", labels=labels
        )
        consecutive = GaugeMetricFamily(
            "trioblock_worker_consecutive_errors",
            "Failures of a worker since its last success.",
            labels=labels,
        )
        queue = GaugeMetricFamily(
            "trioblock_worker_queue_length", "Work waiting for a worker.", labels=labels
        )
        progress = GaugeMetricFamily(
            "trioblock_worker_progress", "Progress 0..1 of a worker's current run.", labels=labels
        )
        tranquility = GaugeMetricFamily(
            "trioblock_worker_tranquility", "Tranquility of a worker.", labels=labels
        )
        for w in self.bm.workers():
            for s in WORKER_STATES:
                state.add_metric([w.name, s], 1 if w.state == s else 0)
            errors.add_metric([w.name], w.errors)
            consecutive.add_metric([w.name], w.consecutive_errors)
            if w.queue_length is not None:
                queue.add_metric([w.name], w.queue_length)
            if w.progress is not None:
                progress.add_metric([w.name], w.progress)
            if w.tranquility is not None:
                tranquility.add_metric([w.name], w.tranquility)
        yield from (state, errors, consecutive, queue, progress, tranquility)

    def _scrub(self) -> Iterator[Metric]:
        status = self.bm.scrub_status()
        state = GaugeMetricFamily(
            "trioblock_scrub_state", "1 for the scrub's current state.", labels=["state"]
        )
        for s in SCRUB_STATES:
            state.add_metric([s], 1 if status.state == s else 0)
        yield state
        yield GaugeMetricFamily(
            "trioblock_scrub_progress", "Progress 0..1 of the scrub.", value=status.progress
        )
        yield GaugeMetricFamily(
            "trioblock_scrub_blocks_checked",
            "Blocks verified by the current (or last completed) scrub.",
            value=status.blocks_checked,
        )
        yield GaugeMetricFamily(
            "trioblock_scrub_corruptions_found",
            "Corrupt copies found by scrubs (persisted).",
            value=status.corruptions_found,
        )
        yield GaugeMetricFamily(
            "trioblock_scrub_tranquility", "Scrub tranquility.", value=status.tranquility
        )
        if status.last_completed is not None:
            yield GaugeMetricFamily(
                "trioblock_scrub_last_completed_timestamp_seconds",
                "When the last scrub completed (Unix time).",
                value=status.last_completed / 1000,
            )
        if status.next_run is not None:
            yield GaugeMetricFamily(
                "trioblock_scrub_next_run_timestamp_seconds",
                "When the next automatic scrub starts (Unix time).",
                value=status.next_run / 1000,
            )

    def _rpc(self) -> Iterator[Metric]:
        stats = self.bm.rpc_stats()
        if stats is None:
            return
        for name, value, text in (
            ("connections_opened", stats.connections_opened, "Outgoing connections opened."),
            ("connections_reused", stats.connections_reused, "Requests on pooled connections."),
            ("requests", stats.requests, "Outgoing requests started."),
            ("connections_accepted", stats.connections_accepted, "Incoming authenticated."),
            ("handshakes_rejected", stats.handshakes_rejected, "Incoming handshakes failed."),
        ):
            yield CounterMetricFamily(f"trioblock_rpc_{name}", text, value=value)

    def _disk(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "trioblock_data_dir_size_bytes",
            "Size of the filesystem holding a data directory.",
            labels=["path"],
        )
        free = GaugeMetricFamily(
            "trioblock_data_dir_free_bytes",
            "Free space on the filesystem holding a data directory.",
            labels=["path"],
        )
        state = GaugeMetricFamily(
            "trioblock_data_dir_state",
            "Health of a data directory: 1 for its state (ok, full: out of space, failing: "
            "its disk keeps failing), 0 for the others. Only ok directories take new blocks.",
            labels=["path", "state"],
        )
        errors = GaugeMetricFamily(
            "trioblock_data_dir_errors",
            "Failed operations in a row in a data directory since its last successful write.",
            labels=["path"],
        )
        for entry in self.disk:
            if "error" not in entry:
                size.add_metric([entry["path"]], entry["total"])
                free.add_metric([entry["path"]], entry["free"])
            for name in DIR_STATES:
                state.add_metric([entry["path"], name], 1 if entry["state"] == name else 0)
            errors.add_metric([entry["path"]], entry["errors"])
        yield size
        yield free
        yield state
        yield errors


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def registry_for(bm: BlockManager) -> tuple[CollectorRegistry, NodeCollector]:
    """A registry holding the node's collector and the standard process collector
    (no GC or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = NodeCollector(bm)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry, collector


async def render_metrics(
    bm: BlockManager, registry: CollectorRegistry, collector: NodeCollector
) -> bytes:
    """The Prometheus text exposition of the node, now."""
    collector.disk = await data_dir_usage(bm)
    return generate_latest(registry)


__all__ = ["DEPRECATED", "NodeCollector", "registry_for", "render_metrics", "trioblock_version"]
