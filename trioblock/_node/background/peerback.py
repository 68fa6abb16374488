"""Failed resyncs retried as soon as a peer that could not be reached answers again.

A resync that fails backs off (1, 2, 4… minutes, up to an hour). When it failed because
the peers holding the block could not be reached (a partition, a node restarting), that
back-off would keep the block missing here for minutes after the peers are back. The RPC
layer tells when a peer marked unreachable answers again (``_net/reach.py``); then every
block with a resync error is queued now, its back-off cleared and its error count kept
(what ``retry_all_now`` does), and one line is logged. At most one such retry runs per
:data:`MIN_RETRY_INTERVAL` seconds: a peer that flaps does not turn the resync into a
loop; a return within that time is acted on when it ends.
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
    while True:
        await reach.returned.wait_value(lambda v, seen=seen: v != seen)
        await trio.sleep_until(last_retry + MIN_RETRY_INTERVAL)
        seen = reach.returned.value
        peers = reach.take_returned()
        last_retry = trio.current_time()
        if not ctx.db.resync_errors_len():
            continue
        now = ctx.clock.now_msec()
        retried = await ctx.db.write(partial(ctx.db.retry_all_in, now_msec=now))
        if retried:
            ctx.notify_resync()
            log.info(
                "%s: %s answer%s again: %d failed resync(s) retried now",
                ctx.node_id,
                ", ".join(peers),
                "s" if len(peers) == 1 else "",
                retried,
            )


__all__ = ["MIN_RETRY_INTERVAL", "retry_when_peers_return"]
