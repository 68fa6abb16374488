"""Prometheus metrics of a running node, served over HTTP by ``trioblock serve --metrics``.

:func:`serve_metrics` answers ``GET /metrics`` with the node's exposition
(:mod:`.metrics_collector`) from a tiny HTTP/1.1 server on Trio. The registry also holds
``prometheus_client``'s standard process collector (``process_*``: start time, CPU,
memory, open files; on Linux).

Rules kept here:

- No threads of prometheus_client's own: the server runs on Trio.
- The server is deliberately minimal: one request per connection (``Connection:
  close``), a request head of at most 16 KiB read within 10 s, ``GET`` and ``HEAD``
  only; anything else gets a 4xx answer (any other path: 404). A broken client costs its
  own connection only.
- A scrape that fails (any exception while reading the node) is answered
  ``500 Internal Server Error``, logged with its traceback, and the server keeps
  serving: the metrics endpoint never takes the node down.
- ``serve_metrics`` follows Trio's ``serve_*`` convention: start it with
  ``nursery.start``, which returns the address actually bound (port 0 picks one).
  :func:`bind_metrics` binds the port beforehand, so that ``trioblock serve`` can fail
  on a port in use before the node opens.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from ..errors import TransportError
from .metrics_collector import NodeCollector, registry_for, render_metrics

if TYPE_CHECKING:
    from .._node import BlockManager

log = logging.getLogger("trioblock.metrics")

Address = tuple[str, int]

MAX_REQUEST_HEAD: Final = 16 * 1024
REQUEST_TIMEOUT: Final = 10.0


def _response(status: str, content_type: str, body: bytes, *, head: bool = False) -> bytes:
    headers = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return headers.encode("ascii") + (b"" if head else body)


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_REQUEST_HEAD:
            return None
        data = await stream.receive_some(4096)
        if not data:
            return None
        buf += data
    return bytes(buf)


async def bind_metrics(addr: Address) -> list[trio.SocketListener]:
    """Listen on ``addr`` for :func:`serve_metrics`; ``TransportError`` if it cannot."""
    host, port = addr
    try:
        return await trio.open_tcp_listeners(port, host=host or None)
    except OSError as exc:
        raise TransportError(
            f"cannot listen on {host}:{port} for metrics: {exc.strerror or exc}"
        ) from None


async def _answer(
    bm: BlockManager,
    registry: CollectorRegistry,
    collector: NodeCollector,
    stream: trio.abc.Stream,
) -> None:
    with trio.fail_after(REQUEST_TIMEOUT):
        head = await _read_head(stream)
        if head is None:
            await stream.send_all(_response("400 Bad Request", "text/plain", b"bad request\n"))
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method, path = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            reply = _response("405 Method Not Allowed", "text/plain", b"GET only\n")
        elif path == "/metrics":
            try:
                body = await render_metrics(bm, registry, collector)
            except Exception as exc:
                # Whatever broke in the node's state, the scrape fails, not the node.
                log.exception("metrics scrape failed")
                text = f"metrics scrape failed: {type(exc).__name__}: {exc}\n".encode()
                reply = _response("500 Internal Server Error", "text/plain; charset=utf-8", text)
            else:
                reply = _response("200 OK", CONTENT_TYPE_LATEST, body, head=method == "HEAD")
        else:
            reply = _response("404 Not Found", "text/plain", b"not found\n")
        await stream.send_all(reply)


async def serve_metrics(
    bm: BlockManager,
    addr: Address,
    listeners: list[trio.SocketListener] | None = None,
    *,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``http://HOST:PORT/metrics`` until cancelled; report the bound address.

    ``listeners`` (from :func:`bind_metrics`) are used instead of binding ``addr``.
    """
    registry, collector = registry_for(bm)
    if listeners is None:
        listeners = await bind_metrics(addr)
    sockname = listeners[0].socket.getsockname()
    bound = (str(sockname[0]), int(sockname[1]))

    async def answer(stream: trio.SocketStream) -> None:
        try:
            await _answer(bm, registry, collector, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            log.debug("metrics request failed: %r", exc)
        except Exception:
            log.exception("metrics request failed")
        finally:
            await trio.aclose_forcefully(stream)

    log.info("metrics at http://%s:%d/metrics", *bound)
    task_status.started(bound)
    await trio.serve_listeners(answer, listeners)


__all__ = ["NodeCollector", "bind_metrics", "registry_for", "render_metrics", "serve_metrics"]
