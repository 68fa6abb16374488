"""The network layer: wire protocol, handshake, transports and the RPC node.

Modules, bottom to top:

- :mod:`.messages`, :mod:`.codec`: the wire protocol, sans-IO (bytes in, events out);
- :mod:`.channel`: the codec driven over a Trio stream;
- :mod:`.handshake`: mutual authentication with the cluster secret;
- :mod:`.transport`, :mod:`.tcp`: the pluggable ``Transport`` protocol and its TCP/TLS
  implementation (the in-memory one lives in ``trioblock.testing``);
- :mod:`.rpc`: ``RpcNode`` (requests, replies, connection pools) and ``RpcHandler``.

This package imports only from ``trioblock.errors`` and ``trioblock._core``.
"""
