"""The one table between error kinds on the wire and exceptions, in both directions.

A server turns a failure of its handler into an ``Error{kind, message}`` reply
(:func:`error_reply`); the client turns that reply back into an exception
(:func:`remote_error`). Both read :data:`KINDS`:

============  =====================================  =====================================
kind          raised by the handler                  raised at the client
============  =====================================  =====================================
``missing``   ``MissingBlockError``                  ``MissingBlockError`` (block requests)
``corrupt``   ``CorruptBlockError``                  ``CorruptBlockError`` (block requests)
``auth``      ``AuthenticationError``                ``AuthenticationError``
``protocol``  ``ProtocolError``                      ``ProtocolError``
``layout``    ``StaleLayoutError``                   ``StaleLayoutError``
``refused``   any other ``TrioblockError``           :class:`RequestFailed`
``internal``  any other exception (a bug, logged)    :class:`RequestFailed`
============  =====================================  =====================================

A block error needs the block's hash: for a request without one (an admin or reference
request), ``missing`` and ``corrupt`` become :class:`RequestFailed` as any other kind does.
Kinds this table does not know (a newer peer's) are :class:`RequestFailed` too, carrying
the kind and the peer's message.
"""

from __future__ import annotations

from typing import Final

from ..errors import (
    AdminRequestFailed,
    AuthenticationError,
    BlockError,
    CorruptBlockError,
    MissingBlockError,
    ProtocolError,
    RequestFailed,
    StaleLayoutError,
    TrioblockError,
)
from .messages import MAX_ERROR_MESSAGE_LEN, Error

__all__ = [
    "INTERNAL",
    "KINDS",
    "REFUSED",
    "AdminRequestFailed",
    "RequestFailed",
    "error_reply",
    "remote_error",
]

#: Error kind ↔ exception type, most specific first (``AuthenticationError`` is a
#: ``ProtocolError``): the first entry the exception is an instance of gives its kind.
KINDS: Final[tuple[tuple[str, type[TrioblockError]], ...]] = (
    ("missing", MissingBlockError),
    ("corrupt", CorruptBlockError),
    ("auth", AuthenticationError),
    ("protocol", ProtocolError),
    ("layout", StaleLayoutError),
)
#: Kind of any other ``TrioblockError`` raised by a handler: the request was refused.
REFUSED: Final = "refused"
#: Kind of an unexpected exception in a handler (a bug on the answering node).
INTERNAL: Final = "internal"

_BY_KIND: Final = dict(KINDS)


def kind_of(exc: TrioblockError) -> str:
    """The error kind that reports ``exc`` to a peer."""
    for kind, cls in KINDS:
        if isinstance(exc, cls):
            return kind
    return REFUSED


def error_reply(exc: TrioblockError, *, bare: bool = False) -> Error:
    """The ``Error`` reply reporting ``exc``.

    A ``refused`` reply names the exception type unless ``bare`` (operator requests,
    whose messages are written for people); messages are cut to what a peer accepts.
    """
    kind = kind_of(exc)
    text = str(exc) if bare or kind != REFUSED else f"{type(exc).__name__}: {exc}"
    return Error(kind, text[:MAX_ERROR_MESSAGE_LEN])


def remote_error(
    peer: str,
    error: Error,
    hash: bytes | None = None,
    *,
    failed: type[RequestFailed] = RequestFailed,
) -> TrioblockError:
    """The exception to raise for ``error``, received from ``peer``.

    ``hash`` is the block the request was about, if any; ``failed`` the type raised for
    kinds without an exception of their own.
    """
    cls = _BY_KIND.get(error.kind)
    text = f"{peer}: {error.message or error.kind}"
    if cls is MissingBlockError and hash is not None:
        return MissingBlockError(hash, f"block {bytes(hash).hex()} missing on {peer}")
    if cls is not None and issubclass(cls, BlockError):
        if hash is not None:
            return cls(hash, text)
    elif cls is not None:
        return cls(text)
    return failed(peer, error.kind, error.message)
