"""Fixtures for the operator workers (scrub, repair, rebalance) and data layouts.

``open_ops_node`` opens a node like ``open_node``, without fsync (faster).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import trioblock


@pytest.fixture
def open_ops_node(open_node: Callable[..., Any]) -> Callable[..., Any]:
    @asynccontextmanager
    async def open_(config: trioblock.Config | None = None, **overrides: Any) -> AsyncIterator[Any]:
        overrides.setdefault("data_fsync", False)
        async with open_node(config, **overrides) as bm:
            yield bm

    return open_
