"""Tests of the network layer: codec, handshake, transports, RPC, in-memory network."""
