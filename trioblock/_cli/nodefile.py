"""The node configuration file (TOML) read by ``trioblock serve`` and the client commands.

Example::

    node_id = "n0"
    metadata_dir = "/var/lib/trioblock/n0/meta"
    data_dir = "/var/lib/trioblock/n0/data"     # or a list of tables, see below
    rpc_bind_addr = "127.0.0.1:3901"
    rpc_secret_file = "/etc/trioblock/secret"   # or rpc_secret = "…" (hex or text)
    replication_factor = 3
    # write_quorum = 2                          # default: a majority
    compression_level = 1                       # or "none"
    resync_tranquility = 2
    scrub_tranquility = 4

    [[data_dir]]                                # several directories instead of one path
    path = "/mnt/disk1/trioblock"
    capacity = "2T"
    read_only = false

    [peers]                                     # every node of the cluster, this one too
    n0 = "127.0.0.1:3901"
    n1 = "127.0.0.1:3902"
    n2 = { addr = "127.0.0.1:3903", zone = "dc2" }

Every other :class:`~trioblock.Config` field (``gc_delay``, ``rpc_timeout``, …) may be set
by name. Errors are ``ConfigError`` naming the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .._core.config import Config, DataDir
from .._core.placement import StaticLayout
from ..errors import ConfigError

Address = tuple[str, int]

_CONFIG_FIELDS = {f.name for f in fields(Config)}
_FILE_ONLY = {
    "rpc_bind_addr",
    "rpc_secret_file",
    "replication_factor",
    "write_quorum",
    "peers",
    "metrics_addr",
}


def parse_address(value: object, key: str) -> Address:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(key, f"port must be a number in {value!r}") from None
    if not 0 <= number <= 65535 or not host:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    return host, number


def parse_secret(value: str) -> bytes:
    """A secret written as hex (64+ digits, as Garage's ``rpc_secret``) or as plain text."""
    text = value.strip()
    try:
        if len(text) >= 32 and len(text) % 2 == 0:
            return bytes.fromhex(text)
    except ValueError:
        pass
    return text.encode()


@dataclass(frozen=True)
class NodeFile:
    """A parsed node configuration file."""

    path: Path
    config: Config
    layout: StaticLayout | None
    listen: Address | None
    peers: dict[str, Address]
    metrics_addr: Address | None

    def address_of(self, node_id: str) -> Address:
        if node_id == self.config.node_id and self.listen is not None:
            return self.listen
        try:
            return self.peers[node_id]
        except KeyError:
            raise ConfigError("peers", f"no address for node {node_id!r}") from None


def _relative(base: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load_node_file(path: Path | str) -> NodeFile:
    """Read and validate a node configuration file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config", f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: {exc}") from None
    # Relative paths in the file are relative to the file, wherever the command runs.
    base = path.absolute().parent
    unknown = set(raw) - _CONFIG_FIELDS - _FILE_ONLY
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown setting")

    values: dict[str, Any] = {k: v for k, v in raw.items() if k in _CONFIG_FIELDS}
    for key in ("node_id", "metadata_dir", "data_dir"):
        if key not in values:
            raise ConfigError(key, "missing")
    values["metadata_dir"] = _relative(base, values["metadata_dir"], "metadata_dir")
    data_dir = values["data_dir"]
    if isinstance(data_dir, list):
        dirs = []
        for entry in data_dir:
            if not isinstance(entry, dict) or "path" not in entry:
                raise ConfigError("data_dir", "each [[data_dir]] needs a path")
            extra = set(entry) - {"path", "capacity", "read_only"}
            if extra:
                raise ConfigError("data_dir", f"unknown key {sorted(extra)[0]!r}")
            dirs.append(
                DataDir(
                    _relative(base, entry["path"], "data_dir"),
                    capacity=entry.get("capacity"),
                    read_only=bool(entry.get("read_only", False)),
                )
            )
        values["data_dir"] = dirs
    else:
        values["data_dir"] = _relative(base, data_dir, "data_dir")
    if values.get("compression_level") in ("none", "None", False):
        values["compression_level"] = None
    if "rpc_secret" in values:
        if not isinstance(values["rpc_secret"], str):
            raise ConfigError("rpc_secret", "expected a string")
        values["rpc_secret"] = parse_secret(values["rpc_secret"])
    if "rpc_secret_file" in raw:
        secret_path = _relative(base, raw["rpc_secret_file"], "rpc_secret_file")
        try:
            values["rpc_secret"] = parse_secret(secret_path.read_text())
        except OSError as exc:
            raise ConfigError("rpc_secret_file", f"{secret_path}: {exc.strerror}") from None
    try:
        config = Config(**values).validate()
    except TypeError as exc:
        raise ConfigError("config", str(exc)) from None

    listen = (
        parse_address(raw["rpc_bind_addr"], "rpc_bind_addr") if "rpc_bind_addr" in raw else None
    )
    metrics = parse_address(raw["metrics_addr"], "metrics_addr") if "metrics_addr" in raw else None
    peers: dict[str, Address] = {}
    zones: dict[str, str] = {}
    raw_peers = raw.get("peers", {})
    if not isinstance(raw_peers, dict):
        raise ConfigError("peers", 'expected a table of node_id = "HOST:PORT"')
    for node, spec in raw_peers.items():
        if isinstance(spec, dict):
            peers[node] = parse_address(spec.get("addr"), f"peers.{node}")
            zones[node] = str(spec.get("zone", ""))
        else:
            peers[node] = parse_address(spec, f"peers.{node}")
            zones[node] = ""
    layout = None
    if peers:
        if config.node_id not in peers:
            if listen is None:
                raise ConfigError("peers", f"this node ({config.node_id}) is not listed")
            peers[config.node_id] = listen
            zones[config.node_id] = ""
        layout = StaticLayout(
            zones if any(zones.values()) else sorted(peers),
            replication_factor=int(raw.get("replication_factor", min(3, len(peers)))),
            write_quorum=raw.get("write_quorum"),
        )
        if config.rpc_secret is None:
            raise ConfigError("rpc_secret", "a node with peers needs rpc_secret or rpc_secret_file")
    return NodeFile(path, config, layout, listen, peers, metrics)
