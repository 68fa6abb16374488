"""``TcpTransport``: the ``Transport`` protocol over TCP, optionally with TLS.

Rules kept here:

- Outgoing connections use ``trio.open_tcp_stream`` to the address registered for the node
  id (``peers`` / :meth:`TcpTransport.add_peer`); incoming ones are accepted by
  ``trio.serve_listeners`` in a nursery that :meth:`TcpTransport.serve` owns.
- With TLS, both handshakes complete (under a deadline on the server side) before a stream
  is handed on, so certificate failures surface at ``connect`` as ``TransportError`` and
  never reach the RPC handler. The client verifies the server's certificate against the
  peer's host name or IP address.
- Socket and TLS errors become :class:`~trioblock.errors.TransportError`; an exception
  escaping a connection handler is logged and never stops the server.
- Listening on port 0 picks a free port; :attr:`TcpTransport.listen_address` tells which,
  and later ``serve`` calls (a restart) reuse it. :meth:`TcpTransport.bind` binds early, so
  that peers can learn the address before the node serves.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio

from ..errors import TransportError
from .transport import StreamHandler

__all__ = ["TcpTransport"]

log = logging.getLogger("trioblock.net")

Address = tuple[str, int]


class TcpTransport:
    """TCP streams between nodes, with optional TLS.

    ``listen`` is the ``(host, port)`` to serve on (``None``: this node does not serve);
    ``peers`` maps node ids to their ``(host, port)``. ``ssl_context`` enables TLS: it is
    the client context used for outgoing connections and, unless ``server_ssl_context`` is
    given, also the server context for incoming ones. ``tls_handshake_timeout`` bounds an
    incoming TLS handshake.
    """

    def __init__(
        self,
        listen: Address | None = None,
        peers: Mapping[str, Address] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        server_ssl_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = 10.0,
    ) -> None:
        server_ssl = server_ssl_context or ssl_context
        if (
            listen is not None
            and server_ssl is not None
            and server_ssl.protocol == ssl.PROTOCOL_TLS_CLIENT
        ):
            # ssl.create_default_context() makes a client-only context: serving with it
            # would fail on the first connection, so say so now.
            raise ValueError(
                "ssl_context is a client context (PROTOCOL_TLS_CLIENT): pass a server "
                "context as server_ssl_context to serve TLS"
            )
        self._listen = listen
        self._peers: dict[str, Address] = dict(peers or {})
        self._client_ssl = ssl_context
        self._server_ssl = server_ssl
        self._tls_handshake_timeout = tls_handshake_timeout
        self._listen_address: Address | None = None
        self._bound: list[trio.SocketListener] | None = None

    def __repr__(self) -> str:
        tls = ", tls" if self._client_ssl or self._server_ssl else ""
        return f"TcpTransport(listen={self._listen!r}, peers={len(self._peers)}{tls})"

    @property
    def listen_address(self) -> Address | None:
        """The ``(host, port)`` actually bound, once :meth:`bind` or :meth:`serve` has run."""
        return self._listen_address

    @property
    def peers(self) -> dict[str, Address]:
        """A copy of the node id → address table."""
        return dict(self._peers)

    def add_peer(self, node_id: str, address: Address) -> None:
        """Register (or replace) the address of ``node_id``."""
        self._peers[node_id] = (address[0], int(address[1]))

    def remove_peer(self, node_id: str) -> None:
        """Forget the address of ``node_id`` (no error if unknown)."""
        self._peers.pop(node_id, None)

    # -- client side ----------------------------------------------------------------

    async def connect(self, node_id: str) -> trio.abc.Stream:
        """Open a TCP (and TLS, if configured) stream to ``node_id``."""
        try:
            host, port = self._peers[node_id]
        except KeyError:
            raise TransportError(f"unknown node {node_id!r}: no address registered") from None
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise TransportError(f"cannot connect to {node_id} at {host}:{port}: {exc}") from exc
        if self._client_ssl is None:
            return tcp
        stream = trio.SSLStream(tcp, self._client_ssl, server_hostname=host)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            raise TransportError(
                f"TLS handshake with {node_id} at {host}:{port} failed: {exc.__cause__ or exc}"
            ) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    # -- server side ----------------------------------------------------------------

    async def bind(self) -> Address:
        """Bind the listening socket now (idempotent) and return the bound address."""
        if self._bound is None:
            self._bound = await self._open_listeners()
        assert self._listen_address is not None
        return self._listen_address

    async def _open_listeners(self) -> list[trio.SocketListener]:
        if self._listen is None:
            raise RuntimeError("this TcpTransport has no listen address")
        host, port = self._listen
        if self._listen_address is not None:
            port = self._listen_address[1]  # a restart keeps the port chosen the first time
        try:
            listeners = await trio.open_tcp_listeners(port, host=host or None)
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
        sockname = listeners[0].socket.getsockname()
        self._listen_address = (str(sockname[0]), int(sockname[1]))
        return listeners

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled; see :class:`~trioblock._net.transport.Transport`."""
        listeners = self._bound if self._bound is not None else await self._open_listeners()
        self._bound = None
        try:
            log.debug("listening on %s:%s", *(self._listen_address or ("?", "?")))
            task_status.started()
            await trio.serve_listeners(partial(self._handle, handler), listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _handle(self, handler: StreamHandler, tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        if self._server_ssl is not None:
            try:
                tls = trio.SSLStream(tcp, self._server_ssl, server_side=True)
            except (ssl.SSLError, ValueError) as exc:
                log.error("cannot serve TLS to %s: %r", _peername(tcp), exc)
                await trio.aclose_forcefully(tcp)
                return
            try:
                with trio.fail_after(self._tls_handshake_timeout):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                log.info("TLS handshake from %s failed: %r", _peername(tcp), exc.__cause__ or exc)
                await trio.aclose_forcefully(tls)
                return
            stream = tls
        try:
            await handler(stream)
        except Exception:
            # The server outlives any one connection: log the bug, drop the connection.
            log.exception("connection handler failed for %s", _peername(tcp))
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        """Release a socket bound by :meth:`bind` and never served."""
        if self._bound is not None:
            for listener in self._bound:
                await trio.aclose_forcefully(listener)
            self._bound = None


def _peername(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername())
    except OSError:
        return "?"
