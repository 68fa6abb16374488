"""Fixtures for the operator workers (scrub, repair, rebalance) and data layouts.

``open_ops_node`` opens a node like ``open_node`` and makes sure its operations are
wired (``trioblock._node.operations.attach``: a no-op once ``BlockManager`` inherits
``OperationsMixin`` and starts them itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import trioblock
from trioblock._node.operations import attach


@pytest.fixture
def open_ops_node(open_node: Callable[..., Any]) -> Callable[..., Any]:
    @asynccontextmanager
    async def open_(config: trioblock.Config | None = None, **overrides: Any) -> AsyncIterator[Any]:
        overrides.setdefault("data_fsync", False)
        async with open_node(config, **overrides) as bm:
            yield attach(bm)

    return open_
