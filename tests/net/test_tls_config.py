"""TLS misconfiguration is refused when the transport is built, not on the first peer."""

from __future__ import annotations

import ssl

import pytest

from trioblock import Config, TcpTransport


def test_a_client_only_context_cannot_serve() -> None:
    with pytest.raises(ValueError, match="server_ssl_context"):
        TcpTransport(listen=("127.0.0.1", 0), ssl_context=ssl.create_default_context())


def test_a_client_only_context_is_fine_for_a_client() -> None:
    TcpTransport(peers={"n0": ("127.0.0.1", 1)}, ssl_context=ssl.create_default_context())


def test_config_repr_hides_the_secret(tmp_path: object) -> None:
    config = Config(node_id="n", metadata_dir="m", data_dir="d", rpc_secret=b"s3cr3t-value")
    assert "s3cr3t" not in repr(config)
