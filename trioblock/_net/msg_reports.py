"""The messages of operators' reports gathered from peers (``block info --cluster``,
``stats``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .._core.hashing import Hash
from ..errors import ProtocolError
from .fields import read_hash, read_opaque, read_str
from .wire import Wire, as_bytes, wire_message

#: What a :class:`NodeReportQuery` may ask for.
NODE_REPORTS: Final = ("block", "stats")


@wire_message
@dataclass(frozen=True, slots=True)
class NodeReportQuery(Wire):
    """Ask a storage node for an operator report: ``{what, hash?}``; ``what`` is
    ``"block"`` (everything the node holds about block ``hash``) or ``"stats"`` (its
    counts and free space). Answered by :class:`NodeReportReply`."""

    what: str
    hash: Hash | None = None

    def to_map(self) -> dict[str, Any]:
        return {"what": self.what, **({"hash": as_bytes(self.hash)} if self.hash else {})}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NodeReportQuery:
        what = read_str(m, "what", "NodeReportQuery", max_len=16, empty=False)
        if what not in NODE_REPORTS:
            raise ProtocolError(f"NodeReportQuery.what must be one of {', '.join(NODE_REPORTS)}")
        if what == "block":
            return cls(what, read_hash(m, "NodeReportQuery"))
        return cls(what)


@wire_message
@dataclass(frozen=True, slots=True)
class NodeReportReply(Wire):
    """Answer to :class:`NodeReportQuery`: ``{report}``, a map of plain data (checked by
    the node layer that reads it)."""

    report: dict[str, Any] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {"report": self.report}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NodeReportReply:
        return cls(read_opaque(m, "report", "NodeReportReply"))


__all__ = ["NODE_REPORTS", "NodeReportQuery", "NodeReportReply"]
