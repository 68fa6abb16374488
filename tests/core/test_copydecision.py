"""The keep/replace decision of a write (``_core/copydecision``): a full table, then
every sequence of up to three existing copies against the rules."""

from __future__ import annotations

import itertools

import pytest

from trioblock._core.block import BlockHeader
from trioblock._core.copydecision import Action, Existing, decide, supersedes

PLAIN, ZST = BlockHeader.PLAIN, BlockHeader.COMPRESSED

# new encoding, existing copies as (encoding, read-only), expected action, index kept
TABLE: list[tuple[BlockHeader, list[tuple[BlockHeader, bool]], Action, int | None]] = [
    (PLAIN, [], Action.WRITE, None),
    (ZST, [], Action.WRITE, None),
    (PLAIN, [(PLAIN, False)], Action.KEEP, 0),
    (PLAIN, [(ZST, False)], Action.KEEP, 0),
    (ZST, [(ZST, False)], Action.KEEP, 0),
    (ZST, [(PLAIN, False)], Action.REPLACE, None),  # compressed replaces plain
    (PLAIN, [(PLAIN, True)], Action.WRITE, None),  # a read-only copy counts for nothing
    (PLAIN, [(ZST, True)], Action.WRITE, None),
    (ZST, [(ZST, True)], Action.WRITE, None),
    (ZST, [(PLAIN, True)], Action.WRITE, None),  # ...and is never removed
    (ZST, [(PLAIN, False), (ZST, False)], Action.KEEP, 1),
    (PLAIN, [(PLAIN, True), (ZST, False)], Action.KEEP, 1),
    (ZST, [(PLAIN, False), (PLAIN, True)], Action.REPLACE, None),
]


@pytest.mark.parametrize(("new", "copies", "action", "kept"), TABLE)
def test_the_table(
    new: BlockHeader, copies: list[tuple[BlockHeader, bool]], action: Action, kept: int | None
) -> None:
    existing = [Existing(h, ro, i) for i, (h, ro) in enumerate(copies)]
    decision = decide(new, existing)
    assert decision.action is action
    assert (decision.keep.copy if decision.keep else None) == kept
    if action is Action.REPLACE:
        assert [e.copy for e in decision.remove] == [
            i for i, (_h, ro) in enumerate(copies) if not ro
        ]
    else:
        assert decision.remove == ()


def test_only_compressed_supersedes_plain() -> None:
    assert [(new, old) for new in (PLAIN, ZST) for old in (PLAIN, ZST) if supersedes(new, old)] == [
        (ZST, PLAIN)
    ]


COPY = [(h, ro) for h in (PLAIN, ZST) for ro in (False, True)]
CASES = [
    (new, list(copies))
    for new in (PLAIN, ZST)
    for n in range(4)
    for copies in itertools.product(COPY, repeat=n)
]


@pytest.mark.parametrize(("new", "copies"), CASES)
def test_every_case_follows_the_rules(
    new: BlockHeader, copies: list[tuple[BlockHeader, bool]]
) -> None:
    existing = [Existing(h, ro, i) for i, (h, ro) in enumerate(copies)]
    writable = [e for e in existing if not e.read_only]
    decision = decide(new, existing)
    # A read-only copy is never kept nor removed.
    touched = [decision.keep] if decision.keep else list(decision.remove)
    assert all(not e.read_only for e in touched)
    kept = [e for e in writable if not supersedes(new, e.header)]
    if kept:
        # The first copy the new one does not supersede is kept; nothing written.
        assert decision.action is Action.KEEP
        assert decision.keep == kept[0] and decision.remove == ()
    elif writable:
        # Every writable copy is superseded: written, and they are removed.
        assert decision.action is Action.REPLACE
        assert decision.keep is None and list(decision.remove) == writable
    else:
        assert decision.action is Action.WRITE
        assert decision.keep is None and decision.remove == ()
