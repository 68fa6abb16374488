"""trioblock: a content-addressed, compressed, verified and replicated block store on Trio.

The public API, re-exported from private modules::

    import trioblock

    config = trioblock.Config(node_id="n1", metadata_dir="meta", data_dir="data")
    async with trioblock.open_block_manager(config) as bm:
        h = await bm.put_block(b"hello")
        assert await bm.get_block(h) == b"hello"
        bm.incref(h)

See ``docs/`` for the architecture, the on-disk formats and the operator's guide, and
:mod:`trioblock.testing` for the in-memory network and cluster helpers.
"""

from __future__ import annotations

from . import errors as errors
from ._core.block import BlockHeader as BlockHeader
from ._core.block import DataBlock as DataBlock
from ._core.config import Config as Config
from ._core.config import DataDir as DataDir
from ._core.hashing import Hash as Hash
from ._core.hashing import blake2sum as blake2sum
from ._core.placement import Layout as Layout
from ._core.placement import LocalLayout as LocalLayout
from ._core.placement import StaticLayout as StaticLayout
from ._core.refcount import ErrorCounter as ErrorCounter
from ._core.refcount import RcEntry as RcEntry
from ._net.tcp import TcpTransport as TcpTransport
from ._net.transport import Transport as Transport
from ._node.manager import BlockManager as BlockManager
from ._node.manager import Completed as Completed
from ._node.manager import open_block_manager as open_block_manager
from ._node.metrics import Metrics as Metrics
from ._node.workers import WorkerInfo as WorkerInfo
from ._storage.metadata import ResyncErrorInfo as ResyncErrorInfo
from ._storage.metadata import Transaction as Transaction
from .errors import AuthenticationError as AuthenticationError
from .errors import ConfigError as ConfigError
from .errors import CorruptBlockError as CorruptBlockError
from .errors import MissingBlockError as MissingBlockError
from .errors import ProtocolError as ProtocolError
from .errors import QuorumError as QuorumError
from .errors import TransportError as TransportError
from .errors import TrioblockError as TrioblockError

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BlockHeader",
    "BlockManager",
    "Completed",
    "Config",
    "ConfigError",
    "CorruptBlockError",
    "DataBlock",
    "DataDir",
    "ErrorCounter",
    "Hash",
    "Layout",
    "LocalLayout",
    "Metrics",
    "MissingBlockError",
    "ProtocolError",
    "QuorumError",
    "RcEntry",
    "ResyncErrorInfo",
    "StaticLayout",
    "TcpTransport",
    "Transaction",
    "Transport",
    "TransportError",
    "TrioblockError",
    "WorkerInfo",
    "blake2sum",
    "errors",
    "open_block_manager",
]
