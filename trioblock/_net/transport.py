"""The ``Transport`` protocol: how trioblock reaches other nodes, and how they reach it.

A transport only moves bytes. Framing, authentication, requests and connection pooling
belong to the RPC layer (:mod:`trioblock._net.rpc`), which runs on any transport.
trioblock ships two: ``trioblock.testing.MemoryNetwork`` (in-process, with fault
injection) and :class:`trioblock._net.tcp.TcpTransport` (TCP, optional TLS). Run
``trioblock.testing.check_transport`` on your own to check it keeps this contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

import trio

__all__ = ["StreamHandler", "Transport"]

#: What :meth:`Transport.serve` calls for each incoming connection.
StreamHandler: TypeAlias = Callable[[trio.abc.Stream], Awaitable[None]]


@runtime_checkable
class Transport(Protocol):
    """Gives streams to other nodes and serves streams from them.

    The contract, for anyone plugging in their own transport:

    ``await connect(node_id)``
        Return a new, open, bidirectional ``trio.abc.Stream`` to the node called
        ``node_id``; the caller owns it and closes it. Raise
        :class:`~trioblock.errors.TransportError` when the node is unknown or unreachable
        (never a bare ``OSError``). Bytes written on one end arrive in order on the other;
        closing one end makes ``receive_some`` on the other return ``b""`` once the data
        before it has been read. Connecting may take time but must honour cancellation.
        Authentication is not the transport's job (the RPC layer's handshake does it), but
        a transport may add its own, such as TLS.

    ``await serve(handler, *, task_status=trio.TASK_STATUS_IGNORED)``
        Accept connections for this node and call ``await handler(stream)`` for each in a
        nursery the transport owns, concurrently. Call ``task_status.started()`` once
        connections can be accepted, so callers write ``await nursery.start(t.serve, h)``.
        Run until cancelled; when cancelled, stop accepting (further ``connect`` calls to
        this node fail with ``TransportError``), cancel running handlers and return. The
        handler owns its stream and closes it; an exception escaping a handler must not stop
        the server. Serving again after a previous ``serve`` returned must work (a node
        restart).
    """

    async def connect(self, node_id: str) -> trio.abc.Stream:
        """A new stream to ``node_id``; ``TransportError`` if it cannot be reached."""
        ...

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections and run ``handler`` on each until cancelled."""
        ...
