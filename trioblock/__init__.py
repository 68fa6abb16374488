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

import importlib.metadata as _metadata

from . import errors as errors
from ._cli.gatewayfile import open_gateway_from_config as open_gateway_from_config
from ._core.config import Config as Config
from ._core.config import DataDir as DataDir
from ._core.datalayout import DataLayout as DataLayout
from ._core.dirhealth import DataDirState as DataDirState
from ._core.hashing import Hash as Hash
from ._core.hashing import blake2sum as blake2sum
from ._core.layouthistory import VersionRecord as VersionRecord
from ._core.layoutversion import LayoutVersion as LayoutVersion
from ._core.layoutversion import NodeRole as NodeRole
from ._core.placement import JoinCluster as JoinCluster
from ._core.placement import Layout as Layout
from ._core.placement import LocalLayout as LocalLayout
from ._core.placement import StaticLayout as StaticLayout
from ._core.rcentry import RcEntry as RcEntry
from ._core.refcrdt import Reference as Reference
from ._net.rpc import RpcStats as RpcStats
from ._net.tcp import TcpTransport as TcpTransport
from ._net.transport import StreamHandler as StreamHandler
from ._net.transport import Transport as Transport
from ._node.background.rebalance import RebalanceReport as RebalanceReport
from ._node.background.refsync import SyncReport as SyncReport
from ._node.background.repair import RepairReport as RepairReport
from ._node.background.scrubstate import ScrubState as ScrubState
from ._node.background.scrubstate import ScrubStatus as ScrubStatus
from ._node.background.workers import WorkerInfo as WorkerInfo
from ._node.background.workers import WorkerState as WorkerState
from ._node.blockinfo import BlockInfo as BlockInfo
from ._node.blockinfo import LocalCopy as LocalCopy
from ._node.diskusage import DataDirUsage as DataDirUsage
from ._node.layoutstatus import LayoutStatus as LayoutStatus
from ._node.layoutstatus import NodeLayoutState as NodeLayoutState
from ._node.lifecycle import open_block_manager as open_block_manager
from ._node.lifecycle import open_gateway as open_gateway
from ._node.localcounts import QueuedResync as QueuedResync
from ._node.manager import AdminHandler as AdminHandler
from ._node.manager import BlockManager as BlockManager
from ._node.metasnap import RestoreResult as RestoreResult
from ._node.metasnap import SnapshotInfo as SnapshotInfo
from ._node.metasnap import restore_metadata as restore_metadata
from ._node.metrics import Duration as Duration
from ._node.metrics import Metrics as Metrics
from ._node.operations import OperationState as OperationState
from ._node.operations import OperationStatus as OperationStatus
from ._node.recount import CountChange as CountChange
from ._node.recount import RecountReport as RecountReport
from ._node.stats import ClusterStats as ClusterStats
from ._node.stats import DirSpace as DirSpace
from ._node.stats import NodeStats as NodeStats
from ._storage.metadata import ResyncErrorInfo as ResyncErrorInfo
from ._storage.metadata import Transaction as Transaction
from ._storage.stored import StoredBlocks as StoredBlocks
from .errors import AuthenticationError as AuthenticationError
from .errors import BlockError as BlockError
from .errors import ConfigError as ConfigError
from .errors import CorruptBlockError as CorruptBlockError
from .errors import DatabaseError as DatabaseError
from .errors import DiskError as DiskError
from .errors import DiskFullError as DiskFullError
from .errors import GatewayError as GatewayError
from .errors import LayoutError as LayoutError
from .errors import MetadataCorruptError as MetadataCorruptError
from .errors import MissingBlockError as MissingBlockError
from .errors import NodeClosedError as NodeClosedError
from .errors import ProtocolError as ProtocolError
from .errors import PutBatchError as PutBatchError
from .errors import QuorumError as QuorumError
from .errors import ReferenceBatchError as ReferenceBatchError
from .errors import StaleLayoutError as StaleLayoutError
from .errors import TransactionBusyError as TransactionBusyError
from .errors import TransportError as TransportError
from .errors import TrioblockError as TrioblockError

try:
    __version__ = _metadata.version("trioblock")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "VersionRecord",
    "StaleLayoutError",
    "NodeRole",
    "NodeLayoutState",
    "LayoutVersion",
    "LayoutStatus",
    "LayoutError",
    "JoinCluster",
    "AdminHandler",
    "AuthenticationError",
    "BlockError",
    "BlockInfo",
    "ClusterStats",
    "CountChange",
    "DirSpace",
    "LocalCopy",
    "MetadataCorruptError",
    "NodeStats",
    "RecountReport",
    "RestoreResult",
    "SnapshotInfo",
    "restore_metadata",
    "BlockManager",
    "Config",
    "ConfigError",
    "CorruptBlockError",
    "DataDir",
    "DataDirState",
    "DataDirUsage",
    "DataLayout",
    "DatabaseError",
    "DiskError",
    "DiskFullError",
    "Duration",
    "GatewayError",
    "Hash",
    "Layout",
    "LocalLayout",
    "Metrics",
    "MissingBlockError",
    "NodeClosedError",
    "OperationState",
    "OperationStatus",
    "ProtocolError",
    "QueuedResync",
    "QuorumError",
    "RcEntry",
    "PutBatchError",
    "ReferenceBatchError",
    "RebalanceReport",
    "Reference",
    "RepairReport",
    "ResyncErrorInfo",
    "RpcStats",
    "ScrubState",
    "ScrubStatus",
    "StaticLayout",
    "StoredBlocks",
    "StreamHandler",
    "SyncReport",
    "TcpTransport",
    "Transaction",
    "TransactionBusyError",
    "Transport",
    "TransportError",
    "TrioblockError",
    "WorkerInfo",
    "WorkerState",
    "blake2sum",
    "errors",
    "open_block_manager",
    "open_gateway",
    "open_gateway_from_config",
]
