"""Failed resyncs retried as soon as a peer that could not be reached answers again.

A resync that fails backs off (1, 2, 4… minutes, up to an hour). When it failed because
the peers holding the block could not be reached (a partition, a node restarting), that
back-off would keep the block missing here for minutes after the peers are back. The RPC
layer tells when a peer marked unreachable answers again (``_net/reach.py``); then every
block with a resync error is queued now, its back-off cleared and its error count kept
(what ``retry_all_now`` does), and one line is logged. At most one such retry runs per
:data:`MIN_RETRY_INTERVAL` seconds: a peer that flaps does not turn the resync into a
loop; a return within that time is acted on when it ends. A retry the metadata database
refuses (busy, failing) is logged and tried again after that interval: it never takes
the node down.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Final

import trio

from ..._net.reach import Reachability
from ..context import NodeContext

log = logging.getLogger("trioblock.resync")

#: Seconds between two retries caused by returning peers.
MIN_RETRY_INTERVAL: Final = 60.0


async def retry_when_peers_return(ctx: NodeContext, reach: Reachability) -> None:
    """Run until cancelled (the node's nursery)."""
    seen = reach.returned.value
    last_retry = -MIN_RETRY_INTERVAL
    peers: list[str] = []
    failed = False  # the last retry did not happen: try again after the interval
    while True:
        if not failed:
            await reach.returned.wait_value(lambda v, seen=seen: v != seen)
        await trio.sleep_until(last_retry + MIN_RETRY_INTERVAL)
        seen = reach.returned.value
        peers = sorted({*peers, *reach.take_returned()})
        last_retry = trio.current_time()
        try:
            retried = await _retry_failed(ctx)
        except Exception as exc:  # the database refused: the back-offs stand for now
            failed = True
            log.warning(
                "%s: %s answer%s again, but the failed resyncs could not be retried now "
                "(tried again in %ds): %r",
                ctx.node_id,
                ", ".join(peers),
                "s" if len(peers) == 1 else "",
                MIN_RETRY_INTERVAL,
                exc,
            )
            continue
        failed = False
        if retried:
            log.info(
                "%s: %s answer%s again: %d failed resync(s) retried now",
                ctx.node_id,
                ", ".join(peers),
                "s" if len(peers) == 1 else "",
                retried,
            )
        peers = []


async def _retry_failed(ctx: NodeContext) -> int:
    """Queue every block with a resync error now; how many."""
    if not ctx.db.resync_errors_len():
        return 0
    now = ctx.clock.now_msec()
    retried = await ctx.db.write(partial(ctx.db.retry_all_in, now_msec=now))
    if retried:
        ctx.notify_resync()
    return retried


__all__ = ["MIN_RETRY_INTERVAL", "retry_when_peers_return"]
