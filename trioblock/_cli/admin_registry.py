"""The admin ops' registry: ``@op(name)`` records what answers an operator request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._node import BlockManager

#: An op's answer: a reply map, or a reply map and a body to stream after it.
AdminResult = dict[str, Any] | tuple[dict[str, Any], bytes]
AdminOp = Callable[[BlockManager, dict[str, Any], "bytes | None"], Awaitable[AdminResult]]


@dataclass(frozen=True)
class OpSpec:
    fn: AdminOp
    accepts_body: bool


OPS: dict[str, OpSpec] = {}


def op(name: str, *, body: bool = False) -> Callable[[AdminOp], AdminOp]:
    """Register an admin op; ``body=True`` if it takes a request body."""

    def register(fn: AdminOp) -> AdminOp:
        OPS[name] = OpSpec(fn, body)
        return fn

    return register


__all__ = ["AdminOp", "AdminResult", "OPS", "OpSpec", "op"]
