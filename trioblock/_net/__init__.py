"""The network layer: wire protocol, handshake, transports and the RPC node.

Modules, bottom to top:

- :mod:`.fields`, :mod:`.messages`, :mod:`.codec`: the wire protocol, sans-IO (bytes in,
  events out); :mod:`.errormap`: error kinds on the wire ↔ exceptions;
- :mod:`.channel`: the codec driven over a Trio stream; :mod:`.body`: reading a body;
- :mod:`.handshake`: mutual authentication with the cluster secret;
- :mod:`.transport`, :mod:`.tcp`: the pluggable ``Transport`` protocol and its TCP/TLS
  implementation (the in-memory one lives in ``trioblock.testing``);
- :mod:`.pool` (authenticated pooled connections), :mod:`.client` (requests),
  :mod:`.server` (answering them), :mod:`.handler` (``RpcHandler``, what a node
  implements), and :mod:`.rpc`: ``RpcNode``, both sides of one node.

This package imports only from ``trioblock.errors`` and ``trioblock._core``.
"""
