"""``TcpTransport``: the ``Transport`` protocol over TCP, optionally with TLS.

Rules kept here:

- Outgoing connections use ``trio.open_tcp_stream`` to the address registered for the node
  id (``peers`` / :meth:`TcpTransport.add_peer`); incoming ones are accepted by
  ``trio.serve_listeners`` in a nursery that :meth:`TcpTransport.serve` owns.
- With TLS, the server's handshake completes (under a deadline) before a stream is handed
  on, so a peer whose certificate fails never reaches the RPC handler. The client
  verifies the server's certificate against the peer's host name or IP address; a server
  certificate that fails is a ``TransportError`` from ``connect`` naming the TLS failure.
- A client certificate the server refuses (mutual TLS) is seen by the client only after
  its own handshake finished (TLS 1.3 completes the client side first): the server sends
  its TLS alert before closing, and waits briefly for the client to read it, so the
  client's first read fails with a ``TransportError`` saying its certificate was refused
  rather than with a bare broken connection. The server logs a refused certificate as a
  warning; a client that leaves during the TLS handshake only at debug.
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
from contextlib import suppress
from functools import partial
from typing import Any, cast

import trio

from ..errors import TransportError
from .transport import StreamHandler

__all__ = ["TcpTransport", "open_stream"]

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
            address = self._peers[node_id]
        except KeyError:
            raise TransportError(f"unknown node {node_id!r}: no address registered") from None
        return await open_stream(address, self._client_ssl, name=node_id)

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
            tls = await self._accept_tls(tcp, self._server_ssl)
            if tls is None:
                return
            stream = tls
        try:
            await handler(stream)
        except Exception:
            # The server outlives any one connection: log the bug, drop the connection.
            log.exception("connection handler failed for %s", _peername(tcp))
            await trio.aclose_forcefully(stream)

    async def _accept_tls(
        self, tcp: trio.SocketStream, context: ssl.SSLContext
    ) -> trio.SSLStream[trio.SocketStream] | None:
        """The server side of a TLS handshake on ``tcp``; ``None`` (logged) if it failed."""
        outgoing = _OutgoingTap(context)
        try:
            tls = trio.SSLStream(tcp, cast(ssl.SSLContext, outgoing), server_side=True)
        except (ssl.SSLError, ValueError) as exc:
            log.error("cannot serve TLS to %s: %r", _peername(tcp), exc)
            await trio.aclose_forcefully(tcp)
            return None
        try:
            with trio.fail_after(self._tls_handshake_timeout):
                await tls.do_handshake()
        except trio.TooSlowError:
            log.info("TLS handshake from %s timed out", _peername(tcp))
            await trio.aclose_forcefully(tls)
            return None
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            peer = _peername(tcp)
            if isinstance(cause, ssl.SSLCertVerificationError):
                log.warning("TLS: refused the certificate of %s: %s", peer, cause.verify_message)
            elif isinstance(cause, ssl.SSLError) and "CERTIFICATE" in str(cause.reason).upper():
                log.warning("TLS: refused the certificate of %s: %s", peer, cause.reason)
            elif isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
                log.info("TLS handshake from %s failed: %r", peer, cause)
            else:
                log.debug("TLS handshake from %s ended: %r", peer, cause or exc)
            await _send_alert_and_close(tcp, outgoing.pending())
            return None
        return tls

    async def aclose(self) -> None:
        """Release a socket bound by :meth:`bind` and never served."""
        if self._bound is not None:
            for listener in self._bound:
                await trio.aclose_forcefully(listener)
            self._bound = None

    async def __aenter__(self) -> TcpTransport:
        """``async with TcpTransport(...) as t:`` calls :meth:`aclose` on the way out."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


#: Seconds a server waits for a refused TLS client to read the alert and close.
ALERT_LINGER = 2.0


async def open_stream(
    address: Address, ssl_context: ssl.SSLContext | None, *, name: str | None = None
) -> trio.abc.Stream:
    """Open a TCP stream to ``address`` and, given ``ssl_context``, complete the TLS
    handshake on it. ``TransportError`` naming the node (``name``) and address when
    either fails."""
    host, port = address
    who = f"{name} at {host}:{port}" if name else f"{host}:{port}"
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise TransportError(f"cannot connect to {who}: {exc}") from exc
    if ssl_context is None:
        return tcp
    stream = trio.SSLStream(tcp, ssl_context, server_hostname=host)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise TransportError(f"TLS handshake with {who} failed: {exc.__cause__ or exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


class _OutgoingTap:
    """Stands in for an ``SSLContext`` when building a server ``trio.SSLStream``.

    It keeps the outgoing memory BIO of the TLS object, so that the alert OpenSSL writes
    when it refuses a client (``trio.SSLStream`` drops it when the handshake fails) can be
    sent before the connection is closed. Only ``wrap_bio`` is used by ``SSLStream``.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._outgoing: ssl.MemoryBIO | None = None

    def wrap_bio(
        self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, **kwargs: Any
    ) -> ssl.SSLObject:
        self._outgoing = outgoing
        return self._context.wrap_bio(incoming, outgoing, **kwargs)

    def pending(self) -> bytes:
        """TLS bytes written and not sent (the alert of a failed handshake)."""
        return self._outgoing.read() if self._outgoing is not None else b""


async def _send_alert_and_close(tcp: trio.SocketStream, alert: bytes) -> None:
    """Send ``alert``, wait a little for the peer to close, then close ``tcp``.

    Closing at once while the client's first bytes are still arriving would reset the
    connection, and the client would lose the alert along with the reason.
    """
    if alert:
        with trio.move_on_after(ALERT_LINGER), suppress(trio.BrokenResourceError, OSError):
            await tcp.send_all(alert)
            while await tcp.receive_some(65536):
                pass
    await trio.aclose_forcefully(tcp)


def _peername(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername())
    except OSError:
        return "?"
