"""The CLI's side of the admin protocol: finding a node, authenticating, sending requests.

How a command finds its node (first match wins):

- address: ``--node HOST:PORT``, else the ``rpc_bind_addr`` of ``--config node.toml``
  (a wildcard bind address such as ``0.0.0.0`` is reached through loopback);
- secret: ``--secret-file F``, else the ``TRIOBLOCK_SECRET`` environment variable, else
  the config's ``rpc_secret`` / ``rpc_secret_file`` (hex or text, as in the config file);
- node id: ``--node-id``, else the config's ``node_id`` (or, with ``--node``, the id of
  the peer listed at that address), else asked of the node itself: the handshake makes a
  client name the node it expects, so the CLI first opens one connection, reads the
  node's ``Hello`` (which carries its id and is sent before any proof) and closes it.

- TLS: the config's ``[tls]`` table (its CA to verify the node, its certificate and key
  to present when the node requires client certificates), with ``--tls-ca``,
  ``--tls-cert`` and ``--tls-key`` overriding its files or giving them without a config;
  ``--tls`` alone speaks TLS trusting the system's CAs.

The client is an :class:`~trioblock._net.rpc.RpcNode` named ``cli-<8 hex digits>`` over a
:class:`~trioblock.TcpTransport` that knows only the target; the handshake proves the
cluster secret both ways before any request, so a wrong secret fails with exit code 3.

Failures become :class:`~trioblock._cli.output.CliError` with the exit code scripts rely
on (see :func:`failure_exit`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from .._net.channel import Channel
from .._net.handshake import send_hello
from .._net.messages import Error, Hello
from .._net.rpc import AdminRequestFailed, RpcNode
from .._net.tcp import TcpTransport, open_stream
from ..errors import (
    AuthenticationError,
    ConfigError,
    ProtocolError,
    TransportError,
    TrioblockError,
)
from .nodefile import (
    MAX_SECRET_BYTES,
    WILDCARD_HOSTS,
    Address,
    NodeFile,
    load_node_file,
    parse_address,
    parse_secret,
    read_text_file,
)
from .output import CliError, Exit, Output, duration_arg
from .tls import TlsSettings

#: Environment variable holding the cluster secret (hex or text).
SECRET_ENV = "TRIOBLOCK_SECRET"
#: Default deadline of one admin request, seconds (``--timeout``).
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Target:
    """Where the node is and how to prove we belong to its cluster."""

    address: Address
    secret: bytes = field(repr=False)
    node_id: str | None = None
    #: The TLS client context, ``None`` for plain TCP.
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    #: Whether we present a client certificate (for the hint on a refused connection).
    client_cert: bool = False

    def describe(self) -> str:
        host, port = self.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"node {self.node_id} at {where}" if self.node_id else f"the node at {where}"


def add_target_arguments(parser: argparse.ArgumentParser, *, short_config: bool = True) -> None:
    """The options every command talking to a node accepts (``short_config=False``
    leaves ``-c`` to the command: ``layout assign -c CAPACITY``)."""
    group = parser.add_argument_group("reaching the node")
    group.add_argument(
        "--config",
        *(("-c",) if short_config else ()),
        type=Path,
        help="the node's config file (address, secret and node id)",
    )
    group.add_argument("--node", metavar="HOST:PORT", help="the node's RPC address")
    group.add_argument(
        "--secret-file",
        type=Path,
        help=f"file holding the cluster secret (default: ${SECRET_ENV}, then the config's)",
    )
    group.add_argument(
        "--node-id", help="the node's id (default: from the config, else asked of the node)"
    )
    group.add_argument(
        "--tls", action="store_true", help="speak TLS, trusting the system's CAs (see --tls-ca)"
    )
    group.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="CA certificate(s) to verify the node with"
    )
    group.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="client certificate, for mutual TLS"
    )
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="key of --tls-cert")
    group.add_argument(
        "--timeout",
        type=duration_arg,
        default=DEFAULT_TIMEOUT,
        help=f"seconds allowed for each request (default {DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def resolve_target(args: argparse.Namespace) -> Target:
    """The node to talk to, from the command-line options; ``CliError`` (exit 2) if unclear."""
    node: NodeFile | None = None
    try:
        if args.config is not None:
            node = load_node_file(args.config)
        if args.node is not None:
            address = parse_address(args.node, "--node")
        elif node is not None and node.listen is not None:
            address = node.listen
        elif node is not None:
            raise CliError(Exit.USAGE, f"{args.config} has no rpc_bind_addr: give --node")
        else:
            raise CliError(Exit.USAGE, "which node? give --config node.toml or --node HOST:PORT")
        secret = _secret(args, node)
        tls = _tls(args, node)
        ssl_context = None if tls is None else tls.client_context()
    except ConfigError as exc:
        raise CliError(Exit.USAGE, str(exc)) from None
    host, port = address
    address = (WILDCARD_HOSTS.get(host, host), port)
    node_id = args.node_id
    if node_id is None and node is not None:
        if args.node is None:
            node_id = node.config.node_id
        else:
            listed = {(WILDCARD_HOSTS.get(h, h), p): n for n, (h, p) in node.peers.items()}
            node_id = listed.get(address)
    client_cert = tls is not None and tls.cert_file is not None
    return Target(address, secret, node_id, ssl_context, client_cert)


def _tls(args: argparse.Namespace, node: NodeFile | None) -> TlsSettings | None:
    """The TLS settings: the config's ``[tls]``, with the command line's files over them."""
    ca_file: Path | None = getattr(args, "tls_ca", None)
    cert_file: Path | None = getattr(args, "tls_cert", None)
    key_file: Path | None = getattr(args, "tls_key", None)
    base = node.tls if node is not None else None
    if base is None:
        given = (ca_file, cert_file, key_file)
        if not getattr(args, "tls", False) and all(f is None for f in given):
            return None
        base = TlsSettings(origin="--tls")
    tls = base.with_overrides(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    tls.check(serving=False)
    return tls


def _secret(args: argparse.Namespace, node: NodeFile | None) -> bytes:
    if args.secret_file is not None:
        text = read_text_file(Path(args.secret_file), "--secret-file", limit=MAX_SECRET_BYTES)
        secret = parse_secret(text)
    elif os.environ.get(SECRET_ENV):
        secret = parse_secret(os.environ[SECRET_ENV])
    elif node is not None and node.config.rpc_secret is not None:
        secret = node.config.rpc_secret
    else:
        raise CliError(
            Exit.USAGE,
            f"no cluster secret: give --secret-file, set {SECRET_ENV} or use --config",
        )
    if not secret:
        raise CliError(Exit.USAGE, "the cluster secret is empty")
    return secret


async def learn_node_id(
    address: Address,
    client_id: str,
    timeout: float,  # noqa: ASYNC109
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Ask the node at ``address`` its id: send a ``Hello``, read its ``Hello``, hang up."""
    host, port = address
    try:
        with trio.fail_after(timeout):
            stream = await open_stream(address, ssl_context)
            channel = Channel(stream, peer=f"{host}:{port}")
            try:
                await send_hello(channel, client_id)
                event = await channel.receive_event()
            finally:
                await channel.aclose()
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    except trio.TooSlowError:
        raise TransportError(f"{host}:{port} did not answer within {timeout}s") from None
    if isinstance(event, Hello):
        return event.node_id
    if isinstance(event, Error):
        raise ProtocolError(f"{host}:{port} refused the handshake: {event.message}")
    raise ProtocolError(f"{host}:{port} does not speak the trioblock protocol")


class AdminClient:
    """An authenticated admin session with one node (see :func:`open_admin_client`)."""

    def __init__(self, rpc: RpcNode, target: Target, node_id: str, timeout: float) -> None:
        self.rpc = rpc
        self.target = target
        self.node_id = node_id
        self.timeout = timeout

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send ``{"op": op, **args}`` and return the reply map."""
        return await self.rpc.admin(self.node_id, {"op": op, **args}, timeout=self.timeout)

    async def call_with_body(
        self, op: str, body: bytes | None = None, **args: Any
    ) -> tuple[dict[str, Any], bytes | None]:
        """Send a request with an optional body; return the reply map and body."""
        return await self.rpc.admin_with_body(
            self.node_id, {"op": op, **args}, body, timeout=self.timeout
        )


def new_client_id() -> str:
    """A fresh id for one CLI session, as the node's logs will show it."""
    return f"cli-{secrets.token_hex(4)}"


@asynccontextmanager
async def open_admin_client(
    target: Target,
    timeout: float,  # noqa: ASYNC109  (the deadline of each request, not of the session)
    *,
    client_id: str | None = None,
) -> AsyncIterator[AdminClient]:
    """Connect to ``target`` (learning its id first if needed); close on exit."""
    client_id = client_id or new_client_id()
    node_id = target.node_id or await learn_node_id(
        target.address, client_id, timeout, target.ssl_context
    )
    transport = TcpTransport(peers={node_id: target.address}, ssl_context=target.ssl_context)
    rpc = RpcNode(client_id, transport, target.secret, timeout=timeout, max_idle_per_peer=1)
    try:
        yield AdminClient(rpc, replace(target, node_id=node_id), node_id, timeout)
    finally:
        with trio.CancelScope(shield=True):
            await rpc.aclose()


def leaf_error(exc: BaseException) -> BaseException:
    """The one meaningful exception inside (possibly nested) single-member groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def root_causes(exc: BaseException) -> list[BaseException]:
    """The exceptions that actually went wrong inside ``exc``, groups flattened.

    ``trio.Cancelled`` is dropped (it only follows another failure), and a
    ``TrioblockError`` that merely wraps a group (``node … failed: …``) is replaced by
    what the group holds.
    """
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in root_causes(inner)]
    if isinstance(exc, trio.Cancelled):
        return []
    if isinstance(exc, TrioblockError) and isinstance(exc.__cause__, BaseExceptionGroup):
        return root_causes(exc.__cause__) or [exc]
    return [exc]


def describe_error(exc: BaseException) -> str:
    """One line for an error: ``OSError``s as ``strerror: filename``, others as text."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def failure_exit(exc: TrioblockError, target: Target) -> CliError:
    """The exit code and message for a failed exchange with ``target``."""
    if isinstance(exc, AuthenticationError):
        return CliError(
            Exit.UNREACHABLE,
            f"authentication with {target.describe()} failed: {exc} "
            f"(is the secret right? --secret-file, ${SECRET_ENV} or the config's rpc_secret)",
        )
    if isinstance(exc, AdminRequestFailed):
        if exc.kind == "missing":
            return CliError(Exit.FAILED, f"not found: {exc.remote_message}")
        message = describe_error(Exception(exc.remote_message))
        if exc.kind == "refused":  # a bad request, or one the node could not carry out
            return CliError(Exit.FAILED, f"{target.describe()}: {message}")
        return CliError(Exit.FAILED, f"{target.describe()} failed ({exc.kind}): {message}")
    if isinstance(exc, TransportError | ProtocolError):
        return CliError(
            Exit.UNREACHABLE, f"cannot reach {target.describe()}: {exc}{_tls_hint(exc, target)}"
        )
    return CliError(Exit.FAILED, f"{type(exc).__name__}: {exc}")


def _tls_hint(exc: TrioblockError, target: Target) -> str:
    """What to check when a connection failed in a way TLS settings explain."""
    text = str(exc)
    closed = any(w in text for w in ("broke", "closed", "Closed", "does not speak"))
    if target.ssl_context is None:
        if closed:
            return " (does the node require TLS? use its config, or --tls-ca)"
        return ""
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (
            " (the node's certificate is not trusted: give the CA that signed it,"
            " tls.ca_file or --tls-ca, and reach the node by a name or address it is"
            " issued for)"
        )
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return " (the node does not speak TLS: drop the TLS settings)"
    if not target.client_cert and (closed or "alert" in text):
        return " (does the node require a client certificate? tls.cert_file or --tls-cert)"
    return ""


#: A command body run against a node: returns the exit code.
Session = Callable[[AdminClient, Output], Awaitable[int]]


def run_session(args: argparse.Namespace, session: Session) -> int:
    """Resolve the target, connect, run ``session``; map every failure to an exit code."""
    out = Output(json_mode=getattr(args, "json", False))
    try:
        target = resolve_target(args)

        async def main() -> int:
            nonlocal target
            client_id = new_client_id()
            try:
                if target.node_id is None:
                    node_id = await learn_node_id(
                        target.address, client_id, args.timeout, target.ssl_context
                    )
                    target = replace(target, node_id=node_id)
                async with open_admin_client(target, args.timeout, client_id=client_id) as client:
                    return await session(client, out)
            except BaseException as exc:
                leaf = leaf_error(exc)
                if isinstance(leaf, TrioblockError):
                    raise failure_exit(leaf, target) from None
                if leaf is not exc and isinstance(leaf, CliError | KeyboardInterrupt):
                    raise leaf from None
                raise

        return trio.run(main)
    except CliError as exc:
        out.error(exc.message)
        return exc.code
    except KeyboardInterrupt:
        out.error("interrupted")
        return Exit.INTERRUPTED


__all__ = [
    "DEFAULT_TIMEOUT",
    "SECRET_ENV",
    "AdminClient",
    "Session",
    "Target",
    "add_target_arguments",
    "describe_error",
    "failure_exit",
    "leaf_error",
    "learn_node_id",
    "new_client_id",
    "open_admin_client",
    "resolve_target",
    "root_causes",
    "run_session",
]
