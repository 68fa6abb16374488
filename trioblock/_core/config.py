"""Node configuration: a frozen dataclass and its validation.

Field names follow Garage's configuration where one exists. Validation is pure and runs
when a node opens (``open_block_manager``) or when :meth:`Config.validate` is called;
every failure is a :class:`~trioblock.errors.ConfigError` that names the field.

Paths are given as ``str`` or ``os.PathLike`` and stored as absolute ``pathlib.Path``
objects. The constructors' signatures are spelled out for type checkers (under
``TYPE_CHECKING``) because the accepted types are wider than the stored ones; a test
keeps them in step with the fields.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias

from ..errors import ConfigError
from .disk import DISK_METHODS, Disk

NODE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_RESYNC_WORKERS = 8
DAY = 86400.0
#: Longest duration accepted for any setting in seconds (100 years): every delay is also
#: kept in milliseconds in 64-bit database columns and must stay far from their limit.
MAX_SECONDS: Final = 100 * 365 * DAY

#: What a path setting accepts.
PathArg: TypeAlias = str | os.PathLike[str]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)B?\s*$", re.IGNORECASE)

#: Durations (seconds): name -> whether 0 is allowed (and what it means, for messages).
_DURATIONS: Final[dict[str, bool]] = {
    "rpc_timeout": False,
    "need_block_query_timeout": False,
    # 0: an unreferenced block is deleted at the first check, 10 s after its count hit 0.
    "gc_delay": True,
    "resync_retry_delay": False,
    "scrub_interval": False,
    "ref_sync_interval": False,
}
#: Durations that may be None (off): name.
_OPTIONAL_DURATIONS: Final = ("metadata_auto_snapshot_interval",)
#: The settings that are durations (seconds).
DURATION_FIELDS: Final = tuple(_DURATIONS) + _OPTIONAL_DURATIONS
_BOOLS: Final = ("data_fsync", "metadata_fsync", "disable_scrub")
#: Integers: name -> (low, high), both included.
_INTS: Final[dict[str, tuple[int, int]]] = {
    "resync_workers": (1, MAX_RESYNC_WORKERS),
    "resync_tranquility": (0, 1000),
    "scrub_tranquility": (0, 1000),
    "ram_buffer_max": (1, 1 << 50),
    "max_block_size": (1, 1 << 40),
    "disk_threads": (1, 256),
    "metadata_snapshots_kept": (1, 1000),
}


def _absolute(path: PathArg) -> Path:
    return Path(os.path.abspath(path))


def _as_path(value: object) -> object:
    """``value`` as an absolute ``Path`` if it is a usable path, else unchanged.

    Made absolute without touching the disk, so that the same directory given relative
    once and absolute later is recognised as the same. Anything else (an empty string, a
    bytes path, a number) is left for :meth:`Config.validate` to report.
    """
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if isinstance(text, str) and text and "\0" not in text:
            return _absolute(text)
    return value


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

    ``path`` is a ``str`` or ``os.PathLike`` (stored as an absolute ``Path``);
    ``capacity`` (bytes, or a string like ``"2T"``) weighs how many partitions the
    directory is primary for; a ``read_only`` directory is read from but never written.
    """

    path: Path
    capacity: int | str | None = None
    read_only: bool = False

    if TYPE_CHECKING:

        def __init__(
            self, path: PathArg, capacity: int | str | None = None, read_only: bool = False
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _as_path(self.path))

    def capacity_bytes(self, field_name: str = "data_dir") -> int:
        if self.capacity is None:
            raise ConfigError(
                field_name, f"{self.path}: capacity is required with several directories"
            )
        return parse_size(self.capacity, field_name)


@dataclass(frozen=True)
class Config:
    """Configuration of one trioblock node.

    Build it with keywords; paths may be ``str`` or ``os.PathLike`` and are stored as
    absolute ``Path`` objects. Construction does not check values: :meth:`validate` does,
    and ``open_block_manager`` calls it, raising ``ConfigError`` naming the first bad
    field. Durations are seconds, finite, at most 100 years, and positive unless noted.

    - ``node_id`` (required): 1–64 characters of ``[A-Za-z0-9._-]``.
    - ``metadata_dir``, ``data_dir`` (required): the directory of the SQLite database, and
      the data directory (or a list of :class:`DataDir`, or of paths). Both ``None``: a
      gateway node, which stores nothing and reaches blocks through the cluster; exactly
      one ``None`` is an error.
    - ``compression_level = 1``: zstd level -7..22; ``None`` stores blocks plain.
    - ``data_fsync = True``: fsync each block file and its directory on every write.
    - ``metadata_fsync = True``: a metadata commit is fsynced before its call returns
      (synchronous calls with SQLite ``synchronous=FULL``; the node's asynchronous
      writes share an fsync of the WAL in a worker thread), so that a committed
      reference survives a power loss; ``False`` (``NORMAL``) may lose the last commits
      on a power loss or an OS crash, never on a process crash.
    - ``rpc_timeout = 30.0``: seconds for a block read or write with one peer.
    - ``need_block_query_timeout = 5.0``: seconds for asking a peer whether it needs a block.
    - ``gc_delay = 600.0``: seconds between a refcount reaching zero and the block's
      deletion; 0 is allowed (deleted at the first check, 10 s later).
    - ``resync_retry_delay = 60.0``: base of the resync back-off (doubles up to 64 ×).
    - ``resync_workers = 1``: 1..8, the resync workers that always run (more, up to 8,
      join while due work waits); the value persisted at run time wins once set.
    - ``resync_tranquility = 2``: the resync sleeps this × its mean step time between steps.
    - ``scrub_interval = 25 days``: seconds between automatic scrubs, plus a random jitter
      of up to 10 days (use ``disable_scrub`` to turn them off, not 0).
    - ``scrub_tranquility = 4``: as ``resync_tranquility``, for the scrub.
    - ``disable_scrub = False``: no automatic scrub (on-demand scrubs still run).
    - ``ram_buffer_max = 256 MiB``: bytes of block data in flight to peers at once.
    - ``rpc_secret = None``: the cluster secret (non-empty bytes), required by network
      transports; hidden from ``repr``.
    - ``max_block_size = 64 MiB``: largest plaintext block accepted from a caller or a peer.
    - ``disk_threads = 8``: worker threads doing disk and CPU work at once.
    - ``ref_sync_interval = 600.0``: seconds between two anti-entropy passes over the
      block references a node shares with the other storage nodes.
    - ``metadata_auto_snapshot_interval = None``: seconds between two automatic
      snapshots of the metadata database into ``metadata_dir/snapshots`` (None: off;
      ``trioblock meta snapshot`` or ``bm.snapshot_metadata()`` take one on demand).
    - ``metadata_snapshots_kept = 2``: 1..1000, the snapshots kept (the oldest go).
    - ``disk = None``: the ``Disk`` every block file operation goes through (see
      ``trioblock._core.disk``); None is the real disk. Set from code only (a test's
      simulated or fault-injecting disk), never from a config file.

    Integer settings refuse booleans, floats and strings; boolean settings refuse
    integers and strings.
    """

    node_id: str
    metadata_dir: Path | None
    data_dir: Path | tuple[DataDir, ...] | None
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
    #: Seconds between two reference anti-entropy passes.
    ref_sync_interval: float = 600.0
    #: SQLite ``synchronous=FULL`` on the metadata database (``NORMAL`` when False).
    metadata_fsync: bool = True
    #: Seconds between automatic snapshots of the metadata database (None: off).
    metadata_auto_snapshot_interval: float | None = None
    #: Snapshots of the metadata database kept.
    metadata_snapshots_kept: int = 2
    #: The block files' ``Disk`` (see ``_core/disk.py``); None: the real disk.
    disk: Disk | None = None

    if TYPE_CHECKING:

        def __init__(
            self,
            node_id: str,
            metadata_dir: PathArg | None,
            data_dir: PathArg | Sequence[DataDir | PathArg] | None,
            compression_level: int | None = 1,
            data_fsync: bool = True,
            rpc_timeout: float = 30.0,
            need_block_query_timeout: float = 5.0,
            gc_delay: float = 600.0,
            resync_retry_delay: float = 60.0,
            resync_workers: int = 1,
            resync_tranquility: int = 2,
            scrub_interval: float = 25 * DAY,
            scrub_tranquility: int = 4,
            disable_scrub: bool = False,
            ram_buffer_max: int = 256 * 1024 * 1024,
            rpc_secret: bytes | None = None,
            max_block_size: int = 64 * 1024 * 1024,
            disk_threads: int = 8,
            ref_sync_interval: float = 600.0,
            metadata_fsync: bool = True,
            metadata_auto_snapshot_interval: float | None = None,
            metadata_snapshots_kept: int = 2,
            disk: Disk | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata_dir", _as_path(self.metadata_dir))
        data_dir: object = self.data_dir
        if isinstance(data_dir, list | tuple):
            data_dir = tuple(d if isinstance(d, DataDir) else DataDir(d) for d in data_dir)
        else:
            data_dir = _as_path(data_dir)
        object.__setattr__(self, "data_dir", data_dir)

    @property
    def is_gateway(self) -> bool:
        """True for a node that stores nothing (no metadata nor data directory)."""
        return self.metadata_dir is None and self.data_dir is None

    @property
    def metadata_path(self) -> Path:
        """The metadata directory; ``ConfigError`` for a gateway, which has none."""
        if not isinstance(self.metadata_dir, Path):
            raise ConfigError("metadata_dir", "this node stores nothing: it has no metadata dir")
        return self.metadata_dir

    @property
    def data_dirs(self) -> tuple[DataDir, ...]:
        """The data directories as a tuple (empty for a gateway)."""
        if self.data_dir is None:
            return ()
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
        self._validate_dirs()
        level = self.compression_level
        if level is not None and (
            isinstance(level, bool) or not isinstance(level, int) or not -7 <= level <= 22
        ):
            raise ConfigError("compression_level", f"a zstd level in -7..22 or None, got {level!r}")
        for name in _BOOLS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(name, f"expected true or false, got {value!r}")
        for name, allow_zero in _DURATIONS.items():
            _check_seconds(name, getattr(self, name), allow_zero=allow_zero)
        for name in _OPTIONAL_DURATIONS:
            if getattr(self, name) is not None:
                _check_seconds(name, getattr(self, name), allow_zero=False)
        for name, (low, high) in _INTS.items():
            _check_int(name, getattr(self, name), low, high)
        secret = self.rpc_secret
        if secret is not None and (not isinstance(secret, bytes) or len(secret) == 0):
            raise ConfigError("rpc_secret", f"expected non-empty bytes or None, got {secret!r}")
        if self.disk is not None and not all(
            callable(getattr(self.disk, name, None)) for name in DISK_METHODS
        ):
            raise ConfigError(
                "disk", f"expected a Disk (see trioblock._core.disk), got {self.disk!r}"
            )
        return self

    def _validate_dirs(self) -> None:
        meta, data = self.metadata_dir, self.data_dir
        if meta is None and data is None:
            return  # a gateway
        if meta is None or data is None:
            missing, given = (
                ("metadata_dir", "data_dir") if meta is None else ("data_dir", "metadata_dir")
            )
            raise ConfigError(
                missing,
                f"is None but {given} is set: a storage node needs both, a gateway neither",
            )
        if not isinstance(meta, Path):
            raise ConfigError("metadata_dir", f"expected a path, got {meta!r}")
        if isinstance(data, Path):
            return
        if not isinstance(data, tuple) or not data:
            raise ConfigError(
                "data_dir", f"expected a path or a non-empty list of DataDir, got {data!r}"
            )
        seen: set[Path] = set()
        writable = 0
        for d in data:
            if not isinstance(d.path, Path):
                raise ConfigError("data_dir", f"expected a path, got {d.path!r}")
            if not isinstance(d.read_only, bool):
                raise ConfigError("data_dir", f"{d.path}: read_only must be true or false")
            if d.path in seen:
                raise ConfigError("data_dir", f"{d.path} is listed twice")
            seen.add(d.path)
            if not d.read_only:
                writable += 1
                if len(data) > 1:
                    d.capacity_bytes("data_dir")
        if writable == 0:
            raise ConfigError("data_dir", "at least one data directory must be writable")


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"expected a number of seconds, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, f"expected a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            name, f"must be {'zero or more' if allow_zero else 'more than zero'}, got {value!r}"
        )
    if value > MAX_SECONDS:
        raise ConfigError(name, f"at most {MAX_SECONDS:.0f} s (100 years), got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"an integer in {low}..{high}, got {value!r}")
