"""What every RPC request shares: the connection pool, the default deadline, and
one request answered by one reply."""

from __future__ import annotations

from typing import TypeVar

from .._core.hashing import Hash
from ..errors import ProtocolError
from .codec import Event
from .errormap import remote_error
from .messages import (
    Error,
    Message,
)
from .pool import Connection, ConnectionPool

R = TypeVar("R", bound=Message)


class RequestBase:
    """Requests to other nodes over the connections of ``pool`` (see :class:`.client.RpcClient`)."""

    pool: ConnectionPool

    @property
    def timeout(self) -> float:
        """The default deadline of a request, in seconds."""
        return self.pool.timeout

    async def _request(
        self,
        peer: str,
        request: Message,
        reply_type: type[R],
        *,
        background: bool,
        timeout: float | None = None,  # noqa: ASYNC109  (per-request override of the default)
        hash: Hash | None = None,
    ) -> R:
        """Send ``request`` (no body) and return its reply of type ``reply_type``."""

        async def op(conn: Connection) -> R:
            await conn.channel.send_message(request)
            event = await conn.receive()
            if isinstance(event, reply_type):
                conn.done = True
                return event
            if isinstance(event, Error):
                # A server closes the connection after a protocol error: do not pool it.
                conn.done = event.kind != "protocol"
                raise remote_error(peer, event, hash)
            raise unexpected_reply(peer, request, event)

        return await self.pool.call(peer, background, timeout, op)


def unexpected_reply(peer: str, request: Message, event: Event) -> ProtocolError:
    return ProtocolError(f"{peer} answered {type(request).__name__} with {type(event).__name__}")


__all__ = ["RequestBase", "unexpected_reply"]
