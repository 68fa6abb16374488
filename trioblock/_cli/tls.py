"""TLS settings of the node file (``[tls]``) and of the client commands (``--tls-*``).

::

    [tls]
    cert_file = "n0.pem"          # this node's certificate (PEM; chain after it)
    key_file = "n0.key"           # its private key (default: read from cert_file)
    ca_file = "cluster-ca.pem"    # the CA that signed the cluster's certificates
    require_client_cert = false   # true: mutual TLS, refuse clients without one signed by ca_file

With a ``[tls]`` table, ``trioblock serve`` accepts only TLS connections and connects to
its peers over TLS; the client commands given the same config file (or ``--tls-ca``)
speak TLS to the node. Certificates are checked against the peer's host name or IP
address as written in ``[peers]`` / ``rpc_bind_addr`` / ``--node``. Without ``ca_file``
the system's trusted CAs are used. Every file is read when the command starts, so a
missing file or a key that does not match its certificate is a configuration error
naming the key (exit 2), not a failure on the first connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TLS_KEYS = frozenset({"cert_file", "key_file", "ca_file", "require_client_cert"})
_FLAGS = {"cert_file": "--tls-cert", "key_file": "--tls-key", "ca_file": "--tls-ca"}


@dataclass(frozen=True)
class TlsSettings:
    """Where a node's (or a client's) TLS material is, and whether clients need a certificate."""

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False
    #: The setting's name in messages: ``tls`` in a node file, ``--tls`` on a command line.
    origin: str = "tls"

    def _key(self, name: str) -> str:
        if self.origin == "tls":
            return f"tls.{name}"
        return _FLAGS.get(name, f"tls.{name}")

    def with_overrides(
        self, *, cert_file: Path | None, key_file: Path | None, ca_file: Path | None
    ) -> TlsSettings:
        """These settings with the command line's files in place of the config's."""
        changes: dict[str, Any] = {}
        if cert_file is not None:
            changes["cert_file"] = cert_file
            changes["key_file"] = key_file  # a new certificate comes with its own key
        elif key_file is not None:
            changes["key_file"] = key_file
        if ca_file is not None:
            changes["ca_file"] = ca_file
        return replace(self, **changes, origin="--tls") if changes else self

    def check(self, *, serving: bool) -> None:
        """Raise ``ConfigError`` now for anything that would fail at the first connection."""
        if serving and self.cert_file is None:
            raise ConfigError(self._key("cert_file"), "a node serving TLS needs its certificate")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError(self._key("key_file"), "given without cert_file")
        if self.require_client_cert and self.ca_file is None:
            raise ConfigError(
                self._key("ca_file"), "require_client_cert needs the CA that signs the clients"
            )
        self.client_context()
        if serving:
            self.server_context()

    def client_context(self) -> ssl.SSLContext:
        """For outgoing connections: verify the server; present our certificate if any."""
        try:
            context = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file)
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(self._key("ca_file"), _describe(self.ca_file, exc)) from None
        self._load_certificate(context)
        return context

    def server_context(self) -> ssl.SSLContext:
        """For incoming connections: our certificate; the CA's check of clients if required."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load_certificate(context)
        if self.require_client_cert:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(self._key("ca_file"), _describe(self.ca_file, exc)) from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _load_certificate(self, context: ssl.SSLContext) -> None:
        if self.cert_file is None:
            return
        for name, path in (("cert_file", self.cert_file), ("key_file", self.key_file)):
            if path is not None and not path.is_file():
                raise ConfigError(self._key(name), f"{path}: no such file")
        try:
            context.load_cert_chain(
                str(self.cert_file), None if self.key_file is None else str(self.key_file)
            )
        except (OSError, ssl.SSLError) as exc:
            key = "cert_file" if self.key_file is None else "key_file"
            what = f"{self.cert_file} with key {self.key_file or '(in the same file)'}"
            raise ConfigError(self._key(key), f"cannot load {what}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _describe(path: Path | None, exc: BaseException) -> str:
    return f"{path}: {_reason(exc)}"


def parse_tls_table(raw: object, base: Path) -> TlsSettings:
    """The ``[tls]`` table of a node file (paths relative to the file's directory)."""
    if not isinstance(raw, dict):
        raise ConfigError("tls", "expected a [tls] table")
    unknown = set(raw) - TLS_KEYS
    if unknown:
        raise ConfigError(f"tls.{sorted(unknown)[0]}", "unknown setting")
    paths: dict[str, Path | None] = {}
    for name in ("cert_file", "key_file", "ca_file"):
        value = raw.get(name)
        if value is None:
            paths[name] = None
        elif isinstance(value, str) and value:
            path = Path(value).expanduser()
            paths[name] = path if path.is_absolute() else base / path
        else:
            raise ConfigError(f"tls.{name}", f"expected a path, got {value!r}")
    require = raw.get("require_client_cert", False)
    if not isinstance(require, bool):
        raise ConfigError("tls.require_client_cert", f"expected true or false, got {require!r}")
    return TlsSettings(
        paths["cert_file"], paths["key_file"], paths["ca_file"], require_client_cert=require
    )


__all__ = ["TLS_KEYS", "TlsSettings", "parse_tls_table"]
