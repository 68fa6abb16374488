"""The storage layer's face: what the node layer uses of it.

Block files (``BlockStore``, over the node's ``Disk``), the metadata database
(``MetadataDb``) and its rows, the walk over a data directory, and ``run_blocking``
(worker threads for every blocking call). The node layer imports these names from
here, never from the modules that hold them.
"""

from __future__ import annotations

from .blockfiles import BlockStore, WriteOutcome
from .database import DB_NAME, Transaction
from .dirhealth import DirHealthView
from .dirwalk import EntryKind, WalkEntry, walk_data_dir
from .durable import Placed
from .inspect import all_copies, queued_times
from .metadata import MetadataDb, ResyncErrorInfo
from .paths import BlockLocation, block_path
from .queuerows import (
    ResyncBatchEnd,
    queue_after,
    resync_defer_many,
    resync_end_batch,
    resync_succeeded_many,
)
from .readmany import read_raw_many, read_verified_many
from .realdisk import RealDisk
from .recount import CountFix, fix_counts_in, referenced_hashes
from .reftable import Keep
from .snapshots import (
    RestoreResult,
    SnapshotInfo,
    list_snapshots,
    restore_snapshot_sync,
    take_snapshot_sync,
)
from .stored import StoredBlocks
from .threads import run_blocking
from .verify import VerifyReport, verify_dir
from .writemany import write_blocks

__all__ = [
    "DB_NAME",
    "CountFix",
    "RestoreResult",
    "SnapshotInfo",
    "all_copies",
    "fix_counts_in",
    "list_snapshots",
    "queued_times",
    "referenced_hashes",
    "restore_snapshot_sync",
    "take_snapshot_sync",
    "VerifyReport",
    "verify_dir",
    "BlockLocation",
    "BlockStore",
    "DirHealthView",
    "EntryKind",
    "Keep",
    "MetadataDb",
    "Placed",
    "RealDisk",
    "ResyncBatchEnd",
    "ResyncErrorInfo",
    "StoredBlocks",
    "Transaction",
    "WalkEntry",
    "WriteOutcome",
    "block_path",
    "queue_after",
    "read_raw_many",
    "read_verified_many",
    "resync_defer_many",
    "resync_end_batch",
    "resync_succeeded_many",
    "run_blocking",
    "walk_data_dir",
    "write_blocks",
]
