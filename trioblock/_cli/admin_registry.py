"""The admin ops' registry: ``@op(name)`` records what answers an operator request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._net.rpc import AdminResult
from .._node import BlockManager

#: An op: answers one request (an op's answer, an ``AdminResult``, is a reply map, or a
#: reply map and a body to stream after it).
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
