"""The scrub's state: the persisted record and the status reported to users.

``ScrubRecord`` is what the ``settings`` table keeps under ``scrub_state`` (a CBOR map:
state, position, progress, last completion, next run, corruptions found) so that a
restart resumes where the last checkpoint was; ``ScrubStatus`` is what
``BlockManager.scrub_status()`` returns; ``ScrubState`` is the one vocabulary both use.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ScrubState(enum.StrEnum):
    """The scrub's state, as persisted, reported by ``scrub_status()`` and shown by the CLI.

    ``RUNNING`` and ``PAUSED`` have a run in progress; ``FINISHED`` (a run completed
    before) and ``IDLE`` (none ever completed) have none.
    """

    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    IDLE = "idle"

    @property
    def in_progress(self) -> bool:
        return self in (ScrubState.RUNNING, ScrubState.PAUSED)


@dataclass
class ScrubRecord:
    """What ``scrub_state`` holds (all times in node msec)."""

    status: ScrubState
    next_run: int
    tranquility: int
    dir_index: int = 0
    dir_path: str | None = None
    after: str = ""
    started_at: int | None = None
    last_completed: int | None = None
    paused_until: int | None = None
    corruptions: int = 0
    #: blocks verified by the current run
    checked: int = 0
    #: blocks verified by the last completed run
    last_checked: int | None = None

    def encode(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "position": {"dir": self.dir_index, "path": self.dir_path, "after": self.after},
            "started_at": self.started_at,
            "last_completed": self.last_completed,
            "next_run": self.next_run,
            "corruptions": self.corruptions,
            "paused_until": self.paused_until,
            "tranquility": self.tranquility,
            "checked": self.checked,
            "last_checked": self.last_checked,
        }

    @classmethod
    def decode(cls, obj: Any) -> ScrubRecord:
        """Raises ``ValueError`` (or KeyError/TypeError) on a malformed map."""
        raw = obj["status"]
        if raw == "stopped":  # written by earlier versions
            raw = ScrubState.IDLE if obj.get("last_completed") is None else ScrubState.FINISHED
        status = ScrubState(raw)  # ValueError when unknown
        pos = obj.get("position") or {}

        def opt_int(name: str) -> int | None:
            value = obj.get(name)
            return None if value is None else int(value)

        return cls(
            status=status,
            next_run=int(obj["next_run"]),
            tranquility=int(obj["tranquility"]),
            dir_index=int(pos.get("dir", 0)),
            dir_path=pos.get("path"),
            after=str(pos.get("after", "")),
            started_at=opt_int("started_at"),
            last_completed=opt_int("last_completed"),
            paused_until=opt_int("paused_until"),
            corruptions=int(obj.get("corruptions", 0)),
            checked=int(obj.get("checked", 0)),
            last_checked=opt_int("last_checked"),
        )


@dataclass(frozen=True)
class ScrubStatus:
    """What ``BlockManager.scrub_status()`` reports.

    ``state`` is a :class:`ScrubState` (a ``str``): ``"running"``, ``"paused"``,
    ``"finished"`` (no run in progress, one completed before) or ``"idle"`` (no run in
    progress, none ever completed).
    ``blocks_checked`` counts the current run, or the last completed one when none runs.
    Times are node msec.
    """

    state: ScrubState
    progress: float
    last_completed: int | None
    next_run: int | None
    corruptions_found: int
    tranquility: int
    paused_until: int | None
    blocks_checked: int


__all__ = ["ScrubRecord", "ScrubState", "ScrubStatus"]
