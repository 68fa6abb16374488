"""The ``GetBlocksReply`` for a handler's outcomes (the server's half of ``GetBlocks``).

A handler's ``rpc_get_blocks`` gives one outcome per hash, for the first hashes asked:
the block as stored, None (no copy), or the exception that failed it. The reply keeps
them in order and stops once the bodies reach ``MAX_GET_BLOCKS_BYTES`` (so a reply holds
under 4 MiB plus one block); the asker asks for the rest again. A ``TrioblockError``
becomes that block's error of the matching kind; any other exception is a bug, logged,
and reported as ``internal``. A handler giving no outcome, or more than asked, is a
bug too: the whole request is answered ``internal``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .._core.block import DataBlock
from .._core.hashing import Hash
from ..errors import TrioblockError
from .errormap import INTERNAL, error_reply
from .messages import MAX_GET_BLOCKS_BYTES, Error, GetBlocksReply, GetResult, GotBlock

__all__ = ["get_blocks_reply"]

log = logging.getLogger("trioblock.net")


def get_blocks_reply(
    node_id: str, peer: str, outcomes: Iterable[object], asked: list[Hash]
) -> tuple[GetBlocksReply | Error, list[bytes]]:
    """The reply to send for ``outcomes`` and the bodies that follow it, in order."""
    found = list(outcomes)
    if not 1 <= len(found) <= len(asked):
        log.error("%s: get_blocks returned %d outcomes for %d", node_id, len(found), len(asked))
        return Error(INTERNAL, f"{len(found)} outcomes returned for {len(asked)} blocks"), []
    results: list[GetResult] = []
    payloads: list[bytes] = []
    size = 0
    for outcome in found:
        if size >= MAX_GET_BLOCKS_BYTES:
            break
        if outcome is None:
            results.append(None)
        elif isinstance(outcome, DataBlock):
            results.append(GotBlock(outcome.header, len(outcome.payload)))
            payloads.append(outcome.payload)
            size += len(outcome.payload)
        elif isinstance(outcome, TrioblockError):
            log.debug("%s: a block asked by %s failed: %r", node_id, peer, outcome)
            results.append(error_reply(outcome))
        else:
            log.error("%s: get_blocks failed a block with %r", node_id, outcome)
            results.append(Error(INTERNAL, f"{type(outcome).__name__} in get_blocks"))
    return GetBlocksReply(results), payloads
