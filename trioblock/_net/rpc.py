"""The RPC layer: requests and replies between nodes, over any :class:`Transport`.

:class:`RpcNode` is both sides of one node: a client (the request methods of
:class:`~.client.RpcClient`, over the connection pools of :mod:`.pool`) and a server
(:meth:`RpcNode.serve`, :mod:`.server`) answering peers by calling an
:class:`~.handler.RpcHandler`. Where things live:

- :mod:`.messages`: the messages and their wire maps (one class each);
- :mod:`.errormap`: the one table between error kinds and exceptions;
- :mod:`.body`: reading a streamed body;
- :mod:`.pool`: authenticated connections, pooled per peer, foreground and background;
- :mod:`.client`: one method per request;
- :mod:`.server`: the handshake of incoming connections and the route of each request;
- :mod:`.handler`: the ``RpcHandler`` protocol a node implements.
"""

from __future__ import annotations

from typing import Any

import trio

from .client import RpcClient
from .codec import DEFAULT_MAX_BODY_SIZE
from .errormap import AdminRequestFailed, RequestFailed
from .handler import AdminReplyBody, AdminResult, RpcHandler
from .handshake import DEFAULT_HANDSHAKE_TIMEOUT
from .messages import MAX_GET_BLOCKS, MAX_GET_BLOCKS_BYTES, PutEntry
from .pool import MAX_CONNECTIONS_PER_PEER, MAX_IDLE_PER_PEER, ConnectionPool, RpcStats
from .reach import Reachability
from .server import DRAIN_TIMEOUT, RpcServer
from .transport import Transport

__all__ = [
    "DRAIN_TIMEOUT",
    "MAX_CONNECTIONS_PER_PEER",
    "MAX_GET_BLOCKS",
    "MAX_GET_BLOCKS_BYTES",
    "MAX_IDLE_PER_PEER",
    "AdminReplyBody",
    "AdminRequestFailed",
    "AdminResult",
    "PutEntry",
    "RequestFailed",
    "RpcHandler",
    "RpcNode",
    "RpcStats",
]


class RpcNode(RpcClient):
    """One node's end of the RPC protocol: a client with connection pools, and a server.

    ``node_id`` is this node's id (sent in the handshake); ``secret`` the cluster's
    ``rpc_secret``; ``timeout`` the default deadline of a request; ``max_body_size`` the
    largest body accepted from a peer (the largest encoded block);
    ``background_connections_per_peer`` caps concurrent background requests to a peer,
    ``connections_per_peer`` concurrent foreground ones (more wait for a connection);
    ``handshake_timeout`` bounds a handshake (default ``min(timeout, 10 s)``);
    ``max_idle_per_peer`` bounds each idle pool.
    """

    def __init__(
        self,
        node_id: str,
        transport: Transport,
        secret: bytes,
        *,
        timeout: float = 30.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        background_connections_per_peer: int = 2,
        handshake_timeout: float | None = None,
        max_idle_per_peer: int = MAX_IDLE_PER_PEER,
        connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
    ) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        self.node_id = node_id
        self.transport = transport
        self.max_body_size = max_body_size
        self.handshake_timeout = (
            handshake_timeout
            if handshake_timeout is not None
            else min(timeout, DEFAULT_HANDSHAKE_TIMEOUT)
        )
        self.stats = RpcStats()
        #: peers this node could not connect to, and those that answered again since
        self.reachability = Reachability()
        super().__init__(
            ConnectionPool(
                node_id,
                transport,
                bytes(secret),
                timeout=timeout,
                handshake_timeout=self.handshake_timeout,
                max_body_size=max_body_size,
                background_connections_per_peer=background_connections_per_peer,
                max_idle_per_peer=max_idle_per_peer,
                connections_per_peer=connections_per_peer,
                stats=self.stats,
                reachability=self.reachability,
            )
        )
        self.server = RpcServer(
            node_id,
            transport,
            bytes(secret),
            timeout=timeout,
            handshake_timeout=self.handshake_timeout,
            max_body_size=max_body_size,
            stats=self.stats,
            reachability=self.reachability,
        )

    def __repr__(self) -> str:
        return f"RpcNode({self.node_id!r}, {self.transport!r})"

    async def serve(
        self,
        handler: RpcHandler,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer incoming requests with ``handler`` until cancelled.

        Start it with ``await nursery.start(rpc.serve, handler)``: it returns once the
        transport is accepting connections.
        """
        await self.server.serve(handler, task_status=task_status)

    def idle_connections(self, peer: str | None = None) -> int:
        """How many pooled connections wait idle (to ``peer``, or to anyone)."""
        return self.pool.idle_connections(peer)

    async def aclose(self) -> None:
        """Close every idle connection; later requests raise ``TransportError``."""
        await self.pool.aclose()
