"""A node's layout history: live versions, past ones, and every node's progress (pure).

Rules kept here:

- The history holds the *live* versions (the newest is *current*), a record of every
  version ever seen (applied, retired or superseded, with times), and one
  :class:`NodeReport` per node: how far that node has come (the newest version it is
  *synced* to, whether it is *drained*, what it has left to move). Only a node writes
  its own report; reports carry a sequence number and the higher one wins.
- Histories *merge* (:meth:`LayoutHistory.merge`): the join of two histories is the
  same whichever order they meet in, so gossip converges. Two different versions with
  one number: the one with the larger digest wins, the other is recorded as superseded.
  A version retired on either side is retired in the join.
- **Retirement**: once every node holding a role in a live version V reports being
  synced to V (or later), every version older than V is retired: reads no longer need
  them, and their nodes may give up what V does not give them.
- A node is **drained** when it has no role in any live version and reported holding no
  block and no reference row at a version since which no version gave it a role (a
  drained node may be switched off: it stays drained).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import cbor2

from ..errors import LayoutError
from .layoutversion import LayoutVersion, check_node_id

#: Most live versions a history keeps (a further version waits for the oldest to retire).
MAX_LIVE_VERSIONS = 16
#: Most past-version records kept (the oldest are forgotten first).
MAX_RECORDS = 256
#: Most node reports kept (roles of live versions plus nodes draining).
MAX_REPORTS = 4096


@dataclass(frozen=True)
class NodeReport:
    """What one node last said of its own progress (written by that node only)."""

    seq: int
    synced: int = 0
    #: the version at which the node, outside every live version, held nothing (0: never)
    drained: int = 0
    to_fetch: int = 0
    to_hand_off: int = 0
    bytes_to_move: int = 0

    def to_list(self) -> list[int]:
        return [
            self.seq,
            self.synced,
            self.drained,
            self.to_fetch,
            self.to_hand_off,
            self.bytes_to_move,
        ]

    @classmethod
    def from_list(cls, value: object) -> NodeReport:
        if (
            not isinstance(value, list)
            or len(value) != 6
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not all(0 <= v < 2**62 for v in value)
        ):
            raise LayoutError(f"bad node report {value!r}")
        return cls(*value)


@dataclass(frozen=True)
class VersionRecord:
    """One version of the history as ``layout_history()`` shows it.

    ``applied_msec``: when it was applied; ``retired_msec``: when this node saw it
    retired (None while live); ``superseded``: another version with the same number won.
    """

    version: int
    digest: bytes
    applied_msec: int
    retired_msec: int | None = None
    superseded: bool = False
    nodes: tuple[str, ...] = ()
    replication_factor: int = 0
    write_quorum: int = 0

    def to_list(self) -> list[Any]:
        return [
            self.version,
            self.digest,
            self.applied_msec,
            self.retired_msec,
            self.superseded,
            list(self.nodes),
            self.replication_factor,
            self.write_quorum,
        ]

    @classmethod
    def from_list(cls, value: object) -> VersionRecord:
        if not isinstance(value, list) or len(value) != 8:
            raise LayoutError("bad version record")
        version, digest, applied, retired, superseded, nodes, rf, quorum = value
        ints_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62
            for v in (version, applied, rf, quorum)
        )
        if (
            not ints_ok
            or not isinstance(digest, bytes)
            or len(digest) != 16
            or not (retired is None or (isinstance(retired, int) and 0 <= retired < 2**62))
            or not isinstance(superseded, bool)
            or not isinstance(nodes, list)
            or len(nodes) > 1024
        ):
            raise LayoutError("bad version record")
        return cls(
            version,
            digest,
            applied,
            retired,
            superseded,
            tuple(check_node_id(n) for n in nodes),
            rf,
            quorum,
        )

    @classmethod
    def of(cls, v: LayoutVersion) -> VersionRecord:
        return cls(
            v.version,
            v.digest,
            v.applied_msec,
            nodes=tuple(v.nodes),
            replication_factor=v.replication_factor,
            write_quorum=v.write_quorum,
        )


@dataclass(frozen=True)
class LayoutHistory:
    """Live versions (oldest first), records of all versions, and node reports."""

    live: tuple[LayoutVersion, ...] = ()
    records: tuple[VersionRecord, ...] = ()
    reports: Mapping[str, NodeReport] = field(default_factory=dict)

    # -- reading ---------------------------------------------------------------------------

    @property
    def current(self) -> LayoutVersion | None:
        return self.live[-1] if self.live else None

    @property
    def version(self) -> int:
        """The current version's number (0: no version known yet)."""
        return self.live[-1].version if self.live else 0

    def live_nodes(self) -> set[str]:
        """Every node holding a role in a live version."""
        return {n for v in self.live for n in v.roles}

    def known_nodes(self) -> set[str]:
        """Every node a version of the history gave a role, and every node that
        reported (a node leaves this set only when its records are forgotten)."""
        recorded = {n for r in self.records if not r.superseded for n in r.nodes}
        return self.live_nodes() | recorded | set(self.reports)

    def synced(self, node_id: str) -> int:
        report = self.reports.get(node_id)
        return 0 if report is None else report.synced

    def is_drained(self, node_id: str) -> bool:
        """Whether ``node_id`` reported itself drained and no version since gave it a
        role (a drained node may be switched off: it need not report again)."""
        report = self.reports.get(node_id)
        if report is None or report.drained == 0 or node_id in self.live_nodes():
            return False
        return not any(
            r.version > report.drained and not r.superseded and node_id in r.nodes
            for r in self.records
        )

    def record(self, version: int) -> VersionRecord | None:
        for r in self.records:
            if r.version == version and not r.superseded:
                return r
        return None

    @cached_property
    def digest(self) -> bytes:
        """A digest of the whole history (equal digests: nothing to exchange)."""
        return hashlib.blake2b(self.encode(), digest_size=32).digest()

    # -- changing (each returns a new history) ---------------------------------------------

    def with_version(self, v: LayoutVersion, now_msec: int) -> LayoutHistory:
        """``v`` appended as the current version (its number must follow the current)."""
        if self.live and v.version != self.version + 1:
            raise LayoutError(f"version {v.version} does not follow {self.version}")
        if len(self.live) >= MAX_LIVE_VERSIONS:
            raise LayoutError(
                f"{len(self.live)} versions are live already: wait until the older ones "
                "are retired (every node synced) before applying another"
            )
        merged = self.merge(LayoutHistory((v,), (VersionRecord.of(v),)), now_msec)
        return merged

    def with_report(self, node_id: str, report: NodeReport, now_msec: int) -> LayoutHistory:
        """``node_id``'s own report replaced (its sequence number must be higher)."""
        reports = dict(self.reports)
        reports[node_id] = report
        return replace(self, reports=reports).retire(now_msec)

    def next_seq(self, node_id: str, now_msec: int) -> int:
        report = self.reports.get(node_id)
        return max(now_msec, 0 if report is None else report.seq + 1)

    def merge(self, other: LayoutHistory, now_msec: int) -> LayoutHistory:
        """The join of two histories (commutative, associative, idempotent), then any
        retirement the joined reports allow."""
        # Versions: by number; the larger digest wins a number claimed twice.
        by_number: dict[int, LayoutVersion] = {}
        losers: list[LayoutVersion] = []
        for v in (*self.live, *other.live):
            held = by_number.get(v.version)
            if held is None or held.digest == v.digest:
                by_number[v.version] = v
                continue
            winner, loser = (held, v) if held.digest > v.digest else (v, held)
            by_number[v.version] = winner
            losers.append(loser)
        # Records: by (number, digest); retired at the earliest time either side saw.
        recs: dict[tuple[int, bytes], VersionRecord] = {}
        for r in (*self.records, *other.records):
            key = (r.version, r.digest)
            old = recs.get(key)
            if old is None:
                recs[key] = r
                continue
            retired = [t for t in (old.retired_msec, r.retired_msec) if t is not None]
            recs[key] = replace(
                old,
                retired_msec=min(retired) if retired else None,
                superseded=old.superseded or r.superseded,
            )
        for loser in losers:
            key = (loser.version, loser.digest)
            recs[key] = replace(recs.get(key, VersionRecord.of(loser)), superseded=True)
        # A record of a number whose winner differs is superseded too.
        for (number, digest), r in list(recs.items()):
            won = by_number.get(number)
            if won is not None and won.digest != digest and not r.superseded:
                recs[(number, digest)] = replace(r, superseded=True)
        retired_numbers = {
            r.version for r in recs.values() if r.retired_msec is not None and not r.superseded
        }
        newest = max(by_number, default=0)
        live = tuple(
            by_number[n] for n in sorted(by_number) if n == newest or n not in retired_numbers
        )
        reports = dict(self.reports)
        for node_id, report in other.reports.items():
            mine = reports.get(node_id)
            if (
                mine is None
                or report.seq > mine.seq
                or (report.seq == mine.seq and report.to_list() > mine.to_list())
            ):
                reports[node_id] = report
        ordered = tuple(sorted(recs.values(), key=lambda r: (r.version, r.digest)))
        joined = LayoutHistory(live, ordered[-MAX_RECORDS:], reports)
        return joined.retire(now_msec)

    def retire(self, now_msec: int) -> LayoutHistory:
        """Retire every live version older than the newest one all of whose nodes are
        synced to it; forget reports of nodes that are drained or gone."""
        if len(self.live) > 1:
            keep_from = 0
            for i, v in enumerate(self.live):
                if all(self.synced(n) >= v.version for n in v.roles):
                    keep_from = i
            if keep_from:
                gone = {v.version for v in self.live[:keep_from]}
                records = tuple(
                    replace(r, retired_msec=now_msec)
                    if r.version in gone and r.retired_msec is None and not r.superseded
                    else r
                    for r in self.records
                )
                return replace(self, live=self.live[keep_from:], records=records)
        if len(self.reports) > MAX_REPORTS:
            live_nodes = self.live_nodes()
            reports = {
                n: r for n, r in self.reports.items() if n in live_nodes or not self.is_drained(n)
            }
            return replace(self, reports=reports)
        return self

    # -- wire and database form ------------------------------------------------------------

    def to_map(self) -> dict[str, Any]:
        return {
            "live": [v.to_map() for v in self.live],
            "records": [r.to_list() for r in self.records],
            "reports": {n: r.to_list() for n, r in sorted(self.reports.items())},
        }

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return cbor2.dumps(self.to_map())

    @classmethod
    def decode(cls, data: bytes) -> LayoutHistory:
        """Check and decode an encoded history (``LayoutError`` on anything off)."""
        try:
            m = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types on bad input
            raise LayoutError(f"undecodable layout history: {exc}") from None
        return cls.from_map(m)

    @classmethod
    def from_map(cls, m: object) -> LayoutHistory:
        if not isinstance(m, dict):
            raise LayoutError("a layout history must be a map")
        live, records, reports = m.get("live"), m.get("records"), m.get("reports")
        if not isinstance(live, list) or len(live) > MAX_LIVE_VERSIONS:
            raise LayoutError(f"a layout history holds 0..{MAX_LIVE_VERSIONS} live versions")
        if not isinstance(records, list) or len(records) > MAX_RECORDS:
            raise LayoutError(f"a layout history holds at most {MAX_RECORDS} records")
        if not isinstance(reports, dict) or len(reports) > MAX_REPORTS:
            raise LayoutError(f"a layout history holds at most {MAX_REPORTS} node reports")
        versions = tuple(_decode_version(v) for v in live)
        numbers = [v.version for v in versions]
        if numbers != sorted(set(numbers)):
            raise LayoutError("live versions must be in increasing order, each once")
        return cls(
            versions,
            tuple(VersionRecord.from_list(r) for r in records),
            {check_node_id(n): NodeReport.from_list(r) for n, r in reports.items()},
        )


#: Versions decoded lately, by their CBOR encoding: histories are exchanged often and
#: mostly repeat the versions a node already checked (bounded, oldest forgotten first).
_DECODED: dict[bytes, LayoutVersion] = {}
_DECODED_MAX = 64


def _decode_version(m: object) -> LayoutVersion:
    try:
        key = cbor2.dumps(m)
    except Exception as exc:  # not encodable: not a version map either
        raise LayoutError(f"bad layout version: {exc}") from None
    found = _DECODED.get(key)
    if found is None:
        found = LayoutVersion.from_map(m)
        if len(_DECODED) >= _DECODED_MAX:
            del _DECODED[next(iter(_DECODED))]
        _DECODED[key] = found
    return found


__all__ = ["MAX_LIVE_VERSIONS", "LayoutHistory", "NodeReport", "VersionRecord"]
