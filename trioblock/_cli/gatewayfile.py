"""A gateway into the cluster a node's TOML file describes: ``open_gateway_from_config``.

An application next to ``trioblock serve`` nodes need not re-parse ``[peers]`` or guess
the quorum: it reads one of the nodes' files and takes from it what a gateway needs —
the cluster's node ids, zones and addresses (``[peers]``), ``replication_factor`` and
``write_quorum``, the secret (``rpc_secret`` or ``rpc_secret_file``), the ``[tls]``
table, and the request settings (``rpc_timeout``, ``need_block_query_timeout``,
``compression_level``, ``max_block_size``, ``ram_buffer_max``). The node's own settings
(its id, directories, workers) are not used: the gateway stores nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._net.tcp import TcpTransport
from .._node import BlockManager, open_gateway
from ..errors import ConfigError
from .nodefile import load_node_file

#: The settings of the node's file a gateway takes over (request behaviour, not storage).
GATEWAY_SETTINGS = (
    "rpc_timeout",
    "need_block_query_timeout",
    "compression_level",
    "max_block_size",
    "ram_buffer_max",
)


@asynccontextmanager
async def open_gateway_from_config(
    config: str | os.PathLike[str], node_id: str = "gateway", **overrides: Any
) -> AsyncIterator[BlockManager]:
    """Open a gateway into the cluster described by a node's TOML file (``config``).

    ``node_id`` names the gateway (not one of the cluster's nodes); ``overrides`` are
    further :class:`~trioblock.Config` fields, over those taken from the file
    (``rpc_timeout``, ``compression_level``…). ``ConfigError`` when the file is invalid
    or lists no ``[peers]``. Yields a :class:`~trioblock.BlockManager`, as
    :func:`open_gateway` does.

    Example::

        async with trioblock.open_gateway_from_config("/etc/trioblock/n0.toml", "backup") as gw:
            h = await gw.put_block(data)
            await gw.add_reference(h, "snapshot-7")
    """
    node = load_node_file(os.fspath(config))
    if node.layout is None:
        raise ConfigError("peers", f"{node.path} lists no [peers]: a gateway needs the cluster")
    secret = node.config.rpc_secret
    if secret is None:  # load_node_file requires one with [peers]; kept for the types
        raise ConfigError("rpc_secret", f"{node.path} has no secret")
    settings: dict[str, Any] = {name: getattr(node.config, name) for name in GATEWAY_SETTINGS}
    settings.update(overrides)
    ssl_context = node.tls.client_context() if node.tls is not None else None
    async with (
        TcpTransport(peers=node.peers, ssl_context=ssl_context) as transport,
        open_gateway(
            node_id, layout=node.layout, transport=transport, rpc_secret=secret, **settings
        ) as gateway,
    ):
        yield gateway


__all__ = ["GATEWAY_SETTINGS", "open_gateway_from_config"]
