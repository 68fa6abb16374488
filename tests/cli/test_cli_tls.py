"""TLS for ``trioblock serve`` and the client commands, end to end with trustme certificates.

A node serving with a ``[tls]`` table accepts TLS only; ``status --config`` speaks TLS with
the config's CA; a client that does not trust the node's certificate, or does not speak
TLS, is refused with one clear line (exit 3). With ``require_client_cert`` a client
without a certificate signed by the CA is refused too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from cli_kit import NodeProcess, Result, run_cli, start_node

Cli = Callable[..., Result]


def write_certificates(root: Path) -> trustme.CA:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    node = ca.issue_cert("127.0.0.1", "localhost")
    node.cert_chain_pems[0].write_to_path(str(root / "node.pem"))
    for pem in node.cert_chain_pems[1:]:
        pem.write_to_path(str(root / "node.pem"), append=True)
    node.private_key_pem.write_to_path(str(root / "node.key"))
    client = ca.issue_cert("operator@example.org")
    client.cert_chain_pems[0].write_to_path(str(root / "client.pem"))
    client.private_key_pem.write_to_path(str(root / "client.key"))
    return ca


TLS_TABLE = '[tls]\ncert_file = "node.pem"\nkey_file = "node.key"\nca_file = "ca.pem"\n'


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("tls-node")
    write_certificates(root)
    with start_node(root, TLS_TABLE) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("mtls-node")
    write_certificates(root)
    with start_node(root, TLS_TABLE + "require_client_cert = true\n") as running:
        yield running


def by_address(node: NodeProcess, *extra: str) -> list[str]:
    return ["--node", f"127.0.0.1:{node.port}", "--secret-file", str(node.secret_file), *extra]


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_status_over_tls_with_the_node_config(tls_node: NodeProcess) -> None:
    result = run_cli("status", "--json", *tls_node.target)
    assert result.code == 0, result.stderr
    assert result.json()["node_id"] == "n0"


def test_a_client_given_the_ca_learns_the_node_id_over_tls(tls_node: NodeProcess, cli: Cli) -> None:
    ca = str(tls_node.root / "ca.pem")
    result = cli("workers", "--json", *by_address(tls_node, "--tls-ca", ca))
    assert result.code == 0, result.stderr
    assert {w["name"] for w in result.json()} >= {"scrub"}


def test_a_client_without_the_ca_is_refused_in_one_line(tls_node: NodeProcess, cli: Cli) -> None:
    # --tls alone trusts the system's CAs, which did not sign the node's certificate.
    result = cli("status", *by_address(tls_node, "--tls", "--node-id", "n0"))
    assert result.code == 3
    line = one_line(result)
    assert "certificate" in line
    assert "--tls-ca" in line


def test_a_client_with_another_ca_is_refused(
    tls_node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    result = cli("status", *by_address(tls_node, "--tls-ca", str(tmp_path / "other-ca.pem")))
    assert result.code == 3
    assert "not trusted" in one_line(result)


def test_a_plain_client_is_refused_and_told_about_tls(tls_node: NodeProcess, cli: Cli) -> None:
    result = cli("status", *by_address(tls_node, "--node-id", "n0"))
    assert result.code == 3
    assert "TLS" in one_line(result)


def test_a_missing_ca_file_is_a_usage_error(tls_node: NodeProcess, cli: Cli) -> None:
    result = cli("status", *by_address(tls_node, "--tls-ca", "/nonexistent/ca.pem"))
    assert result.code == 2
    assert "--tls-ca" in one_line(result)


def test_mutual_tls_accepts_the_config_certificate(mtls_node: NodeProcess) -> None:
    result = run_cli("status", "--json", *mtls_node.target)
    assert result.code == 0, result.stderr
    root = mtls_node.root
    flags = ["--tls-ca", str(root / "ca.pem"), "--tls-cert", str(root / "client.pem")]
    result = run_cli(
        "status", "--json", *by_address(mtls_node, *flags, "--tls-key", str(root / "client.key"))
    )
    assert result.code == 0, result.stderr


def test_mutual_tls_refuses_a_client_without_certificate(mtls_node: NodeProcess, cli: Cli) -> None:
    ca = str(mtls_node.root / "ca.pem")
    result = cli("status", *by_address(mtls_node, "--tls-ca", ca, "--node-id", "n0"))
    assert result.code == 3
    assert "client certificate" in one_line(result)
    # The node is unharmed.
    assert run_cli("status", "--json", *mtls_node.target).code == 0
