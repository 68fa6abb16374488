"""What a write of a block does with the copies already there: one pure decision.

Rules (the durable write of docs/formats.md):

1. A copy in a read-only data directory counts for nothing: it is never modified (not
   even its mtime), so it cannot stand for a fresh write; the block is written as if it
   were absent.
2. If the block exists already, the existing copy is kept (its mtime refreshed to the
   new "last written" time) — except that a compressed copy replaces a plain one: a new
   compressed copy supersedes an existing plain one, nothing else supersedes anything.
3. So an existing copy is kept when the new copy does not supersede it; the first such
   copy (in lookup order) is the one kept, and nothing is written.
4. Otherwise the new copy is written, and every existing (writable) copy it supersedes
   is removed once the new one is in place: the write *replaces* them. With none, it is
   a plain *write*.

The callers pass only copies they know to be regular files, and verify them first when
they can (a corrupt copy is quarantined, not passed).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .block import BlockHeader

#: Whatever a caller uses to name an existing copy (a location, a ``stat``...).
C = TypeVar("C")


class Action(enum.Enum):
    KEEP = "keep"  # an existing copy stays; nothing written
    WRITE = "write"  # the new copy is written; nothing to remove
    REPLACE = "replace"  # the new copy is written; superseded copies removed


@dataclass(frozen=True, slots=True)
class Existing(Generic[C]):
    """An existing regular copy: its encoding, whether its directory is read-only, and
    the caller's own handle on it."""

    header: BlockHeader
    read_only: bool
    copy: C


@dataclass(frozen=True, slots=True)
class Decision(Generic[C]):
    action: Action
    #: the copy kept (its mtime to refresh), for ``KEEP``
    keep: Existing[C] | None = None
    #: the copies to remove once the new one is written, for ``REPLACE``
    remove: tuple[Existing[C], ...] = ()


def supersedes(new: BlockHeader, existing: BlockHeader) -> bool:
    """Whether a copy in ``new``'s encoding replaces one in ``existing``'s."""
    return new is BlockHeader.COMPRESSED and existing is BlockHeader.PLAIN


def decide(new: BlockHeader, existing: Sequence[Existing[C]]) -> Decision[C]:
    """What a write of a copy encoded as ``new`` does, given the ``existing`` copies in
    lookup order (see the module's rules)."""
    writable = [e for e in existing if not e.read_only]
    for e in writable:
        if not supersedes(new, e.header):
            return Decision(Action.KEEP, keep=e)
    if writable:
        return Decision(Action.REPLACE, remove=tuple(writable))
    return Decision(Action.WRITE)


__all__ = ["Action", "Decision", "Existing", "decide", "supersedes"]
