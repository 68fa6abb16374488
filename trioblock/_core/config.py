"""Node configuration: a frozen dataclass and its validation.

Field names follow Garage's configuration where one exists. Validation is pure and runs
when a node opens (``open_block_manager``) or when :meth:`Config.validate` is called;
every failure is a :class:`~trioblock.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError

NODE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_RESYNC_WORKERS = 8
DAY = 86400.0

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)B?\s*$", re.IGNORECASE)


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))


def parse_size(value: int | str, field_name: str) -> int:
    """Bytes from an int or a string such as ``"500G"``, ``"2TiB"``, ``"1.5T"``."""
    if isinstance(value, bool):
        raise ConfigError(field_name, f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(field_name, f"size must be positive, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            number, unit, binary = m.groups()
            base = 1024 if binary else 1000
            power = " KMGTP".index(unit.upper() or " ")
            size = int(float(number) * base**power)
            if size > 0:
                return size
    raise ConfigError(field_name, f"expected a size like 500G or 2TiB, got {value!r}")


@dataclass(frozen=True)
class DataDir:
    """One data directory of a node with several.

    ``capacity`` (bytes, or a string like ``"2T"``) weighs how many partitions the
    directory is primary for; a ``read_only`` directory is read from but never written.
    """

    path: Path
    capacity: int | str | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.path, str | os.PathLike):
            object.__setattr__(self, "path", _absolute(self.path))

    def capacity_bytes(self, field_name: str = "data_dir") -> int:
        if self.capacity is None:
            raise ConfigError(
                field_name, f"{self.path}: capacity is required with several directories"
            )
        return parse_size(self.capacity, field_name)


@dataclass(frozen=True)
class Config:
    """Configuration of one trioblock node. See DESIGN §3 for every field."""

    node_id: str
    metadata_dir: Path
    data_dir: Path | Sequence[DataDir]
    compression_level: int | None = 1
    data_fsync: bool = True
    rpc_timeout: float = 30.0
    need_block_query_timeout: float = 5.0
    gc_delay: float = 600.0
    resync_retry_delay: float = 60.0
    resync_workers: int = 1
    resync_tranquility: int = 2
    scrub_interval: float = 25 * DAY
    scrub_tranquility: int = 4
    disable_scrub: bool = False
    ram_buffer_max: int = 256 * 1024 * 1024
    rpc_secret: bytes | None = field(default=None, repr=False)
    #: Largest plaintext block accepted from a caller or a peer.
    max_block_size: int = 64 * 1024 * 1024
    #: Worker threads doing disk and CPU work at once (hash, zstd, fsync).
    disk_threads: int = 8
    #: Seconds between two reference anti-entropy passes (``sync_references``).
    ref_sync_interval: float = 600.0

    def __post_init__(self) -> None:
        # Paths are made absolute (without touching the disk) so that the same directory
        # given relative once and absolute later is recognised as the same.
        if isinstance(self.metadata_dir, str | os.PathLike):
            object.__setattr__(self, "metadata_dir", _absolute(self.metadata_dir))
        if isinstance(self.data_dir, str | os.PathLike):
            object.__setattr__(self, "data_dir", _absolute(self.data_dir))
        elif isinstance(self.data_dir, list | tuple):
            object.__setattr__(
                self,
                "data_dir",
                tuple(d if isinstance(d, DataDir) else DataDir(Path(d)) for d in self.data_dir),
            )

    @property
    def data_dirs(self) -> tuple[DataDir, ...]:
        """The data directories as a tuple, whether one path or several were given."""
        if isinstance(self.data_dir, Path):
            return (DataDir(self.data_dir),)
        return tuple(self.data_dir)

    @property
    def gc_delay_msec(self) -> int:
        return int(self.gc_delay * 1000)

    @property
    def rpc_timeout_msec(self) -> int:
        return int(self.rpc_timeout * 1000)

    @property
    def resync_retry_delay_msec(self) -> int:
        return int(self.resync_retry_delay * 1000)

    def validate(self) -> Config:
        """Check every field; raise ``ConfigError`` naming the first bad one."""
        if not isinstance(self.node_id, str) or not NODE_ID_RE.match(self.node_id):
            raise ConfigError("node_id", f"1-64 characters of [A-Za-z0-9._-], got {self.node_id!r}")
        if not isinstance(self.metadata_dir, Path):
            raise ConfigError("metadata_dir", f"expected a path, got {self.metadata_dir!r}")
        self._validate_data_dirs()
        level = self.compression_level
        if level is not None and (
            isinstance(level, bool) or not isinstance(level, int) or not -7 <= level <= 22
        ):
            raise ConfigError("compression_level", f"a zstd level in -7..22 or None, got {level!r}")
        for name in ("data_fsync", "disable_scrub"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"expected True or False, got {getattr(self, name)!r}")
        for name in ("rpc_timeout", "need_block_query_timeout", "ref_sync_interval"):
            _positive_number(self, name, allow_zero=False)
        for name in ("gc_delay", "resync_retry_delay", "scrub_interval"):
            _positive_number(self, name, allow_zero=True)
        if self.resync_retry_delay <= 0:
            raise ConfigError("resync_retry_delay", "must be positive")
        _int_in(self, "resync_workers", 1, MAX_RESYNC_WORKERS)
        _int_in(self, "resync_tranquility", 0, 1000)
        _int_in(self, "scrub_tranquility", 0, 1000)
        _int_in(self, "ram_buffer_max", 1, 1 << 50)
        _int_in(self, "max_block_size", 1, 1 << 40)
        _int_in(self, "disk_threads", 1, 256)
        secret = self.rpc_secret
        if secret is not None and (not isinstance(secret, bytes) or len(secret) == 0):
            raise ConfigError("rpc_secret", "expected non-empty bytes or None")
        return self

    def _validate_data_dirs(self) -> None:
        if isinstance(self.data_dir, Path):
            return
        dirs = self.data_dir
        if not isinstance(dirs, tuple) or not dirs:
            raise ConfigError("data_dir", "a path or a non-empty list of DataDir")
        seen: set[Path] = set()
        writable = 0
        for d in dirs:
            if not isinstance(d, DataDir) or not isinstance(d.path, Path):
                raise ConfigError("data_dir", f"expected DataDir entries, got {d!r}")
            if d.path in seen:
                raise ConfigError("data_dir", f"{d.path} is listed twice")
            seen.add(d.path)
            if not d.read_only:
                writable += 1
                if len(dirs) > 1:
                    d.capacity_bytes("data_dir")
        if writable == 0:
            raise ConfigError("data_dir", "at least one data directory must be writable")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _positive_number(config: Config, name: str, *, allow_zero: bool) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(name, f"expected a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            name, f"must be {'non-negative' if allow_zero else 'positive'}, got {value}"
        )


def _int_in(config: Config, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"an integer in {low}..{high}, got {value!r}")
