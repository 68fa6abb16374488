"""Errors raised by trioblock.

Every error trioblock raises on purpose is a :class:`TrioblockError`::

    TrioblockError
    ├── BlockError                 something is wrong with one block
    │   ├── CorruptBlockError      a copy failed verification (plaintext hash mismatch)
    │   └── MissingBlockError      no reachable node holds a valid copy
    ├── QuorumError                fewer nodes than the write quorum acknowledged
    ├── ReferenceBatchError        some pairs of a batched reference call failed
    ├── PutBatchError              some blocks of a ``put_blocks`` call failed
    ├── ProtocolError              a peer sent bytes that break the wire protocol
    │   └── AuthenticationError    a peer failed the shared-secret handshake
    ├── DeletionDeferred           an unreferenced block is kept for now (GC retries)
    ├── TransportError             a peer could not be reached or the connection broke
    │   └── RequestFailed          a node answered with an error of no type of its own
    │       └── AdminRequestFailed ... to an operator request
    ├── ConfigError                the configuration is invalid (names the field)
    │   └── LayoutError            a layout change is invalid, or the layout is fixed
    ├── NodeClosedError            the node was used after its context was left
    ├── GatewayError               a gateway was asked for something only storage nodes have
    ├── AdminUnavailableError      the node takes no operator requests
    ├── AdminRequestError          an operator request was malformed or cannot be applied
    ├── DiskError                  a data directory's disk failed a write or read (names it)
    │   └── DiskFullError          ... because it is full (ENOSPC)
    └── DatabaseError              the node's metadata database failed (busy, closed, corrupt)
        └── TransactionBusyError   another task's ``bm.transaction()`` is open

Whose fault it was is part of the type: ``ProtocolError`` and ``AuthenticationError``
blame the peer, ``ConfigError`` blames the caller's configuration, ``CorruptBlockError``
blames the disk (or a peer's disk). Misuse of the API (a hash of the wrong length, a
negative size) raises the usual ``ValueError``/``TypeError``.
"""

from __future__ import annotations

__all__ = [
    "RequestFailed",
    "DeletionDeferred",
    "AdminUnavailableError",
    "AdminRequestFailed",
    "AdminRequestError",
    "AuthenticationError",
    "BlockError",
    "ConfigError",
    "CorruptBlockError",
    "DatabaseError",
    "DiskError",
    "DiskFullError",
    "GatewayError",
    "LayoutError",
    "MetadataCorruptError",
    "MissingBlockError",
    "NodeClosedError",
    "ProtocolError",
    "QuorumError",
    "PutBatchError",
    "ReferenceBatchError",
    "StaleLayoutError",
    "TransactionBusyError",
    "TransportError",
    "TrioblockError",
]


class TrioblockError(Exception):
    """Base class of every error trioblock raises on purpose."""


class BlockError(TrioblockError):
    """An error about one block; ``hash`` names it."""

    def __init__(self, hash: bytes, message: str | None = None) -> None:
        self.hash = hash
        hexhash = bytes(hash).hex()
        super().__init__(message or f"{type(self).__name__}: block {hexhash}")


class CorruptBlockError(BlockError):
    """A copy of the block does not hash to its name.

    Local copies that fail are quarantined (renamed ``*.corrupted``) and queued for
    repair before this is raised.
    """

    #: Where the corrupt local copy is (the storage layer's ``BlockLocation``), when the
    #: error is about one; None for a copy received from a peer or a caller.
    location: object | None = None

    def __init__(
        self, hash: bytes, message: str | None = None, *, location: object | None = None
    ) -> None:
        super().__init__(hash, message or f"block {bytes(hash).hex()} failed verification")
        self.location = location


class MissingBlockError(BlockError):
    """No node that was asked returned a valid copy of the block."""

    def __init__(self, hash: bytes, message: str | None = None) -> None:
        super().__init__(hash, message or f"block {bytes(hash).hex()} not found on any node")


class QuorumError(TrioblockError):
    """A write reached fewer nodes than the write quorum.

    ``errors`` maps each node that failed to the exception it failed with;
    ``successes`` counts the nodes that acknowledged; ``quorum`` is what was needed.
    """

    def __init__(
        self,
        message: str,
        *,
        quorum: int = 0,
        successes: int = 0,
        errors: dict[str, BaseException] | None = None,
    ) -> None:
        self.quorum = quorum
        self.successes = successes
        self.errors: dict[str, BaseException] = dict(errors or {})
        detail = "; ".join(f"{node}: {exc!r}" for node, exc in sorted(self.errors.items()))
        super().__init__(
            f"{message} ({successes}/{quorum} acknowledged){': ' + detail if detail else ''}"
        )


class ReferenceBatchError(TrioblockError):
    """Some pairs of ``add_references`` / ``remove_references`` (or ``remove_owner``)
    failed; the others were committed by their quorums.

    ``failed`` maps each failed pair ``(hash, owner as bytes)`` to its own error: a
    :class:`QuorumError` (with each node's cause) when a quorum did not commit it, or a
    :class:`MissingBlockError` when it was committed but none of the storage nodes that
    acknowledged it holds a copy of the block (put the block again). ``succeeded``
    counts the pairs that went through; ``missing`` lists the hashes to put again.
    """

    def __init__(
        self,
        message: str,
        *,
        failed: dict[tuple[bytes, bytes], TrioblockError],
        succeeded: int,
    ) -> None:
        self.failed: dict[tuple[bytes, bytes], TrioblockError] = dict(failed)
        self.succeeded = succeeded
        first = "; ".join(
            f"{bytes(h).hex()[:16]}/{owner!r}: {exc}"
            for (h, owner), exc in list(self.failed.items())[:3]
        )
        more = len(self.failed) - 3
        super().__init__(
            f"{message}: {len(self.failed)} pair(s) failed, {succeeded} succeeded"
            f"{' (' + first + (f'; {more} more' if more > 0 else '') + ')' if first else ''}"
        )

    @property
    def missing(self) -> list[bytes]:
        """The hashes of the pairs that failed with ``MissingBlockError``, each once."""
        return list(
            dict.fromkeys(
                h for (h, _o), exc in self.failed.items() if isinstance(exc, MissingBlockError)
            )
        )


class PutBatchError(TrioblockError):
    """Some blocks of ``put_blocks`` failed; the others are stored at their quorums.

    ``hashes`` has one entry per block passed, in order: its hash (what it hashes to,
    whether or not it was stored). ``failed`` maps the index (in the list passed) of
    each block that failed to its own error: a :class:`QuorumError` with each storage
    node's cause, or, on a node that stores alone, the :class:`DiskError` of its write.
    ``succeeded`` lists the hashes stored (each once, in order); ``failed_hashes`` the
    hashes of the blocks that failed. Putting the failed blocks again is harmless.
    """

    def __init__(
        self, message: str, *, hashes: list[bytes], failed: dict[int, TrioblockError]
    ) -> None:
        self.hashes: list[bytes] = list(hashes)
        self.failed: dict[int, TrioblockError] = dict(failed)
        first = "; ".join(
            f"block {i} ({bytes(self.hashes[i]).hex()[:16]}): {exc}"
            for i, exc in sorted(self.failed.items())[:3]
        )
        more = len(self.failed) - 3
        super().__init__(
            f"{message}: {len(self.failed)} of {len(self.hashes)} block(s) failed"
            f"{' (' + first + (f'; {more} more' if more > 0 else '') + ')' if first else ''}"
        )

    @property
    def failed_hashes(self) -> list[bytes]:
        """The hashes of the blocks that failed, each once, in order."""
        return list(dict.fromkeys(self.hashes[i] for i in sorted(self.failed)))

    @property
    def succeeded(self) -> list[bytes]:
        """The hashes stored at their quorums, each once, in order."""
        bad = set(self.failed_hashes)
        return list(dict.fromkeys(h for h in self.hashes if h not in bad))


class DeletionDeferred(TrioblockError):
    """An unreferenced block is kept for now (a storage node could not be asked or
    could not receive it); the resync retries with back-off."""


class ProtocolError(TrioblockError):
    """A peer sent something that breaks the wire protocol.

    The connection it came on is closed; the node carries on.
    """


class AuthenticationError(ProtocolError):
    """The shared-secret handshake failed: wrong ``rpc_secret`` or a forged reply."""


class TransportError(TrioblockError):
    """A peer could not be reached, timed out, or its connection broke mid-request."""


class RequestFailed(TransportError):
    """A node answered a request with an error that has no exception type of its own.

    ``kind`` is the error kind the node sent (``refused`` for a bad or impossible
    request, ``internal`` for a bug on the node, …); ``remote_message`` is the node's
    explanation.
    """

    def __init__(self, peer: str, kind: str, remote_message: str) -> None:
        self.peer = peer
        self.kind = kind
        self.remote_message = remote_message
        super().__init__(f"{peer} failed the request ({kind}): {remote_message}")


class AdminRequestFailed(RequestFailed):
    """A node answered an admin request with an error (``missing`` included: no hash).

    ``remote_message`` is the node's explanation, meant for the operator.
    """


class ConfigError(TrioblockError, ValueError):
    """The configuration is invalid. ``field`` names the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"invalid configuration: {field}: {message}")


class LayoutError(ConfigError):
    """A layout change was refused (``apply_layout``): it names the problem, and
    nothing was stored. Also raised by ``apply_layout`` on a node whose layout is fixed
    (an embedded single node, or a user's own :class:`~trioblock.Layout`)."""

    def __init__(self, message: str, field: str = "layout") -> None:
        super().__init__(field, message)


class StaleLayoutError(TrioblockError):
    """A peer refused a request because the layouts of the two nodes differ (one of them
    has not learned the newest version yet). The sender exchanges layouts with that
    peer; a retry then goes to the right nodes."""


class NodeClosedError(TrioblockError):
    """The node was used after ``open_block_manager``'s context was left (or while
    leaving it). Every public method of a closed ``BlockManager`` raises it."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id} is closed")


class GatewayError(TrioblockError):
    """A gateway (a node that stores nothing) was asked for something only a storage node
    has: local reference counts, the resync queue, scrub, repair, rebalance."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(
            f"node {node_id} is a gateway: it stores no blocks and keeps no reference "
            "counts (use put_block, get_block, stream_block, add_reference, remove_reference)"
        )


class DiskError(TrioblockError, OSError):
    """A data directory's disk failed (``errno`` and ``directory`` say which; it is an
    ``OSError`` too).

    On a write: this node could not store a block in any of its data directories (a
    write, fsync, create or rename failed, the temporary file is gone; the directory
    named is the last one tried). In a cluster it fails this node's part of a put only:
    the put succeeds when the other storage nodes make the write quorum. On a lookup
    (``has_local_block``...): a directory could not be searched (``EIO``, ``EACCES``)
    and no copy was found elsewhere; a get then reads from peers instead. On a write to
    the metadata database (``metadata_fsync``): the fsync of its WAL failed and
    ``directory`` is the metadata directory; what reached the disk is unknown, so the
    node refuses every later metadata write the same way until it is restarted."""

    def __init__(self, directory: str, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.directory = directory
        self.errno = errno


class DiskFullError(DiskError):
    """:class:`DiskError` for a full disk (ENOSPC): every writable data directory of
    the node is full (or failing)."""


class AdminUnavailableError(TrioblockError):
    """This node takes no operator requests (no admin handler installed)."""


class AdminRequestError(TrioblockError):
    """An operator request was malformed or cannot be applied (the caller's fault)."""


class DatabaseError(TrioblockError):
    """The node's metadata database failed: busy (held by another process), corrupt,
    unreadable, or already closed. The message says which; no change was applied."""


class MetadataCorruptError(DatabaseError):
    """The node's metadata database is damaged (SQLite reports it malformed, or not a
    database at all): the node does not open. The message says how to restore it from
    a snapshot (``trioblock meta restore``) or start empty and catch up from peers."""


class TransactionBusyError(DatabaseError):
    """Another task's ``bm.transaction()`` is open: a synchronous reference change now
    would join it and share its fate. Do not ``await`` inside ``with bm.transaction()``."""
