"""The node layer's face for the edges (the CLI, the testing kit): the names they use."""

from __future__ import annotations

from .background.scrubstate import ScrubState
from .blockinfo import BlockInfo
from .layoutstatus import LayoutStatus
from .lifecycle import open_block_manager, open_gateway
from .localcounts import GC_CHECK_SLACK_MSEC
from .manager import BlockManager
from .metasnap import restore_metadata
from .nurseries import service_nursery

__all__ = [
    "BlockInfo",
    "GC_CHECK_SLACK_MSEC",
    "BlockManager",
    "LayoutStatus",
    "ScrubState",
    "open_block_manager",
    "open_gateway",
    "restore_metadata",
    "service_nursery",
]
