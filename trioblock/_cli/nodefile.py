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

A node joining a running cluster says ``join = true`` (a top-level key) and lists, in
``[peers]``, one or more members to learn the cluster's layout from (not itself); it
needs ``rpc_secret`` (or ``rpc_secret_file``) and ``rpc_bind_addr``, and takes
neither ``replication_factor`` nor ``write_quorum`` (both come from the layout). It is
opened with ``layout=JoinCluster(seeds=<those ids>)``, and stores nothing until a
layout version (``trioblock layout assign`` + ``apply``) gives it a role::

    node_id = "n3"
    join = true
    rpc_bind_addr = "127.0.0.1:3904"
    ...
    [peers]
    n0 = "127.0.0.1:3901"

    [tls]                                       # optional: see trioblock._cli.tls
    cert_file = "n0.pem"
    key_file = "n0.key"
    ca_file = "cluster-ca.pem"

Every other :class:`~trioblock.Config` field (``gc_delay``, ``rpc_timeout``, …) may be set
by name. Errors are ``ConfigError`` naming the key, raised while loading (nothing is
started with a bad file): the file and the secret file must be regular UTF-8 text files,
every value has the type of its setting (``resync_workers = "2"`` and ``data_fsync = 1``
are errors, as are infinite or non-positive durations). Durations are seconds, or text
with units as capacities are: ``gc_delay = "10m"``, ``rpc_timeout = "5s"``,
``scrub_interval = "1d"``, ``ref_sync_interval = "1h30m"``.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from .._core.config import DURATION_FIELDS, NODE_ID_RE, Config, DataDir
from .._core.placement import JoinCluster, StaticLayout
from ..errors import ConfigError
from .durations import parse_duration
from .tls import TlsSettings, parse_tls_table

Address = tuple[str, int]

#: ``disk`` is set from code only (a simulated or fault-injecting disk).
_CONFIG_FIELDS = {f.name for f in fields(Config)} - {"disk"}
_FILE_ONLY = {
    "rpc_bind_addr",
    "rpc_secret_file",
    "replication_factor",
    "write_quorum",
    "peers",
    "join",
    "metrics_addr",
    "tls",
}
#: Largest config file read (a config path pointing at a huge file or a device is refused).
MAX_CONFIG_BYTES = 1 << 20
#: Largest secret file read.
MAX_SECRET_BYTES = 64 * 1024


def read_text_file(path: Path, key: str, *, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a small regular file; ``ConfigError`` naming ``key`` otherwise.

    Only regular files are opened (a FIFO would block, a device never end), and at most
    ``limit`` bytes are read.
    """
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(key, f"{path} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(key, f"{path} is not a regular file")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(key, f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(key, f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(key, f"{path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(key, f"{path} is not UTF-8 text (byte {exc.start})") from None


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
    #: ``StaticLayout`` from ``[peers]``, ``JoinCluster`` with ``join = true``, else None.
    layout: StaticLayout | JoinCluster | None
    listen: Address | None
    peers: dict[str, Address]
    metrics_addr: Address | None
    #: The ``[tls]`` table, ``None`` without one (plain TCP).
    tls: TlsSettings | None = None

    @property
    def join(self) -> bool:
        """Whether the node joins a running cluster (``join = true``)."""
        return isinstance(self.layout, JoinCluster)

    def addresses(self) -> dict[str, str]:
        """Every ``host:port`` this file knows, by node id (``[peers]`` and this node's
        own ``rpc_bind_addr``), as layout roles write them."""
        known = dict(self.peers)
        own = self.listen
        if own is not None and own[0] not in WILDCARD_HOSTS:  # 0.0.0.0 reaches nobody
            known.setdefault(self.config.node_id, own)
        return {n: _address_text(a) for n, a in sorted(known.items())}


#: Wildcard bind hosts, each with the loopback address that reaches a node bound to it.
WILDCARD_HOSTS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _address_text(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _relative(base: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(key, f"expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _data_dirs(base: Path, data_dir: object) -> Path | list[DataDir]:
    if not isinstance(data_dir, list):
        return _relative(base, data_dir, "data_dir")
    dirs = []
    for entry in data_dir:
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError("data_dir", "each [[data_dir]] needs a path")
        extra = set(entry) - {"path", "capacity", "read_only"}
        if extra:
            raise ConfigError("data_dir", f"unknown key {sorted(extra)[0]!r}")
        read_only = entry.get("read_only", False)
        if not isinstance(read_only, bool):
            raise ConfigError("data_dir", f"read_only must be true or false, got {read_only!r}")
        capacity = entry.get("capacity")
        if capacity is not None and (
            isinstance(capacity, bool) or not isinstance(capacity, int | str)
        ):
            raise ConfigError("data_dir", f"capacity must be a size like 2T, got {capacity!r}")
        dirs.append(DataDir(_relative(base, entry["path"], "data_dir"), capacity, read_only))
    return dirs


def _duration(text: str, key: str) -> float:
    """A duration written with units, as capacities are (``"5s"``, ``"10m"``, ``"1h30m"``,
    ``"2d"``; ``"0s"`` where 0 is allowed): seconds, checked by ``Config`` afterwards."""
    if _ZERO.fullmatch(text):
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


_ZERO = re.compile(r"\s*0+(\.0*)?\s*[smhdw]?\s*")


def _count(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected a whole number, got {value!r}")
    return value


def _peers(raw: dict[str, Any]) -> tuple[dict[str, Address], dict[str, str]]:
    peers: dict[str, Address] = {}
    zones: dict[str, str] = {}
    raw_peers = raw.get("peers", {})
    if not isinstance(raw_peers, dict):
        raise ConfigError("peers", 'expected a table of node_id = "HOST:PORT"')
    for node, spec in raw_peers.items():
        key = f"peers.{node}"
        if not NODE_ID_RE.match(node):
            raise ConfigError(key, "a node id is 1-64 characters of [A-Za-z0-9._-]")
        if isinstance(spec, dict):
            extra = set(spec) - {"addr", "zone"}
            if extra:
                raise ConfigError(key, f"unknown key {sorted(extra)[0]!r}")
            zone = spec.get("zone", "")
            if not isinstance(zone, str):
                raise ConfigError(key, f"zone must be a string, got {zone!r}")
            peers[node] = parse_address(spec.get("addr"), key)
            zones[node] = zone
        else:
            peers[node] = parse_address(spec, key)
            zones[node] = ""
    return peers, zones


def load_node_file(path: Path | str) -> NodeFile:
    """Read and validate a node configuration file."""
    path = Path(path)
    text = read_text_file(path, "config")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: {exc}") from None
    # Relative paths in the file are relative to the file, wherever the command runs.
    base = path.absolute().parent
    unknown = set(raw) - _CONFIG_FIELDS - _FILE_ONLY
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown setting")

    values: dict[str, Any] = {k: v for k, v in raw.items() if k in _CONFIG_FIELDS}
    for key in DURATION_FIELDS:
        if isinstance(values.get(key), str):
            values[key] = _duration(values[key], key)
    for key in ("node_id", "metadata_dir", "data_dir"):
        if key not in values:
            raise ConfigError(key, "missing")
    values["metadata_dir"] = _relative(base, values["metadata_dir"], "metadata_dir")
    values["data_dir"] = _data_dirs(base, values["data_dir"])
    level = values.get("compression_level")
    if level is False or (isinstance(level, str) and level.lower() == "none"):
        values["compression_level"] = None
    if "rpc_secret" in values:
        if not isinstance(values["rpc_secret"], str):
            raise ConfigError("rpc_secret", "expected a string")
        values["rpc_secret"] = parse_secret(values["rpc_secret"])
        if not values["rpc_secret"]:
            raise ConfigError("rpc_secret", "is empty")
    if "rpc_secret_file" in raw:
        secret_path = _relative(base, raw["rpc_secret_file"], "rpc_secret_file")
        secret = parse_secret(
            read_text_file(secret_path, "rpc_secret_file", limit=MAX_SECRET_BYTES)
        )
        if not secret:
            raise ConfigError("rpc_secret_file", f"{secret_path} is empty")
        values["rpc_secret"] = secret
    config = Config(**values).validate()

    listen = (
        parse_address(raw["rpc_bind_addr"], "rpc_bind_addr") if "rpc_bind_addr" in raw else None
    )
    metrics = parse_address(raw["metrics_addr"], "metrics_addr") if "metrics_addr" in raw else None
    tls = parse_tls_table(raw["tls"], base) if "tls" in raw else None
    replication_factor = _count(raw, "replication_factor")
    write_quorum = _count(raw, "write_quorum")
    peers, zones = _peers(raw)
    join = raw.get("join", False)
    if not isinstance(join, bool):
        raise ConfigError("join", f"expected true or false, got {join!r}")
    layout: StaticLayout | JoinCluster | None = None
    if join:
        layout = _join_layout(config, peers, listen, replication_factor, write_quorum)
    elif peers:
        if config.node_id not in peers:
            if listen is None:
                raise ConfigError("peers", f"this node ({config.node_id}) is not listed")
            peers[config.node_id] = listen
            zones[config.node_id] = ""
        layout = StaticLayout(
            zones if any(zones.values()) else sorted(peers),
            replication_factor=min(3, len(peers))
            if replication_factor is None
            else replication_factor,
            write_quorum=write_quorum,
        )
        if config.rpc_secret is None:
            raise ConfigError("rpc_secret", "a node with peers needs rpc_secret or rpc_secret_file")
    else:
        # A node without peers stores every block itself: one copy, one acknowledgement.
        for key, value in (
            ("replication_factor", replication_factor),
            ("write_quorum", write_quorum),
        ):
            if value is not None and value != 1:
                raise ConfigError(key, f"{value} needs as many nodes listed in [peers]")
    return NodeFile(path, config, layout, listen, peers, metrics, tls)


def _join_layout(
    config: Config,
    peers: dict[str, Address],
    listen: Address | None,
    replication_factor: int | None,
    write_quorum: int | None,
) -> JoinCluster:
    """The layout of a node with ``join = true``: the members it learns the layout from."""
    if not peers:
        raise ConfigError("peers", "join = true needs [peers] naming one or more members")
    if config.node_id in peers:
        raise ConfigError(
            f"peers.{config.node_id}",
            "a joining node lists the members it joins through, not itself",
        )
    if listen is None:
        raise ConfigError("rpc_bind_addr", "join = true needs rpc_bind_addr (the others reach it)")
    if config.rpc_secret is None:
        raise ConfigError("rpc_secret", "join = true needs rpc_secret or rpc_secret_file")
    for key, value in (("replication_factor", replication_factor), ("write_quorum", write_quorum)):
        if value is not None:
            raise ConfigError(key, "a joining node takes it from the cluster's layout: remove it")
    return JoinCluster(seeds=sorted(peers))
