"""How a node spreads blocks over several data directories (pure).

Rules kept here:

- A block's partition is the big-endian u16 of hash bytes 2..3, modulo 1024.
- Every partition has one *primary* directory, chosen among the writable ones in
  proportion to their capacities (largest-remainder rounding, deterministic).
- Read-only directories, and directories that were primary for a partition under an
  older layout, are *secondary* locations: read from, never written, until a rebalance
  moves their blocks to the primary and clears them. Read-only directories stay
  secondary for every partition (a rebalance copies their blocks out but never deletes
  from them); the layout remembers which they are (``read_only``).
- A block may also sit in any other directory of the node: one written there because
  its primary was full or failing. Lookups try those last (``search_roots``); a
  rebalance moves such blocks to their primary.
- Updating the layout for a new set of directories keeps every partition where it is
  unless its directory is gone, read-only, or holds more than its new share; only the
  excess moves.

The layout is serialised (CBOR) into the ``settings`` table so that a restart with the
same directories finds the same assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cbor2

from ..errors import ConfigError
from .config import DataDir

N_PARTITIONS = 1024


def partition_of(hash: bytes) -> int:
    return int.from_bytes(bytes(hash[2:4]), "big") % N_PARTITIONS


def _shares(
    capacities: Sequence[int],
    total: int = N_PARTITIONS,
    current: Sequence[int] | None = None,
) -> list[int]:
    """Split ``total`` partitions in proportion to ``capacities`` (largest remainder).

    Each directory gets the floor of its exact share or one more. With ``current`` (the
    partitions each holds now) the extra units go first to directories that already hold
    more than their floor, so rounding alone never moves a partition; then to
    directories holding none (new ones: they receive partitions anyway), so that a
    rounding unit never makes a directory that holds partitions receive one more; the
    rest by largest remainder.
    """
    cap_sum = sum(capacities)
    exact = [c * total / cap_sum for c in capacities]
    shares = [int(x) for x in exact]
    now = list(current) if current is not None else [0] * len(capacities)
    order = sorted(
        range(len(capacities)),
        key=lambda i: (shares[i] < now[i], now[i] == 0, exact[i] - shares[i], -i),
        reverse=True,
    )
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass(frozen=True)
class DataLayout:
    """Assignment of the 1024 partitions to data directories."""

    dirs: tuple[Path, ...]
    #: index into ``dirs`` of each partition's primary directory
    primary: tuple[int, ...]
    #: indexes into ``dirs`` of each partition's secondary directories
    secondary: tuple[tuple[int, ...], ...]
    #: indexes into ``dirs`` of the read-only directories (never written)
    read_only: tuple[int, ...] = ()

    # -- building -------------------------------------------------------------------

    @classmethod
    def initial(cls, data_dirs: Sequence[DataDir]) -> DataLayout:
        if len(data_dirs) == 1 and not data_dirs[0].read_only:
            d = data_dirs[0]
            return cls((d.path,), (0,) * N_PARTITIONS, ((),) * N_PARTITIONS)
        return cls((), (), ()).update(data_dirs)

    def update(self, data_dirs: Sequence[DataDir]) -> DataLayout:
        """The layout for a new directory list, moving as few partitions as possible."""
        dirs = tuple(d.path for d in data_dirs)
        writable = [i for i, d in enumerate(data_dirs) if not d.read_only]
        if not writable:
            raise ConfigError("data_dir", "at least one data directory must be writable")
        if len(writable) == 1:
            capacities = [1]
        else:
            capacities = [data_dirs[i].capacity_bytes("data_dir") for i in writable]
        old_index = {p: i for i, p in enumerate(self.dirs)}
        remap = {i: dirs.index(p) for p, i in old_index.items() if p in dirs}
        holding = dict.fromkeys(writable, 0)
        for old in self.primary:
            new_i = remap.get(old)
            if new_i in holding:
                holding[new_i] += 1
        shares = _shares(capacities, current=[holding[i] for i in writable])
        quota = dict(zip(writable, shares, strict=True))
        primary: list[int | None] = [None] * N_PARTITIONS
        used = dict.fromkeys(writable, 0)
        for part in range(N_PARTITIONS) if self.primary else ():
            new = remap.get(self.primary[part])
            if new is not None and new in quota and used[new] < quota[new]:
                primary[part] = new
                used[new] += 1
        free = [i for i in writable for _ in range(quota[i] - used[i])]
        for part in range(N_PARTITIONS):
            if primary[part] is None:
                primary[part] = free.pop(0)

        read_only = [i for i, d in enumerate(data_dirs) if d.read_only]
        secondary: list[tuple[int, ...]] = []
        for part in range(N_PARTITIONS):
            prim = primary[part]
            assert prim is not None
            seconds: list[int] = []
            if self.primary:
                previous = [self.primary[part], *self.secondary[part]]
                for old in previous:
                    new = remap.get(old)
                    if new is not None and new != prim and new not in seconds:
                        seconds.append(new)
            for i in read_only:
                if i != prim and i not in seconds:
                    seconds.append(i)
            secondary.append(tuple(seconds))
        return DataLayout(
            dirs,
            tuple(p for p in primary if p is not None),
            tuple(secondary),
            tuple(read_only),
        )

    def without_secondaries(self) -> DataLayout:
        """The layout after a complete rebalance: read-only dirs stay secondary.

        (Read-only directories are never emptied, so dropping them would lose the
        blocks only they hold.)
        """
        return self.with_read_only()

    def with_read_only(self, data_dirs: Sequence[DataDir] | None = None) -> DataLayout:
        """Only the read-only directories as secondary locations (after a rebalance).

        ``data_dirs``, when given, says which directories are read-only (matched by
        path); by default the layout's own ``read_only`` is used.
        """
        if data_dirs is None:
            read_only = list(self.read_only)
        else:
            ro_paths = {d.path for d in data_dirs if d.read_only}
            read_only = [i for i, p in enumerate(self.dirs) if p in ro_paths]
        return DataLayout(
            self.dirs,
            self.primary,
            tuple(tuple(i for i in read_only if i != p) for p in self.primary),
            tuple(read_only),
        )

    # -- lookups --------------------------------------------------------------------

    def primary_dir(self, hash: bytes) -> Path:
        return self.dirs[self.primary[partition_of(hash)]]

    @cached_property
    def dir_names(self) -> tuple[str, ...]:
        """The directories as strings (hot-path lookups build paths without pathlib)."""
        return tuple(str(p) for p in self.dirs)

    def candidate_roots(self, hash: bytes) -> list[str]:
        """:meth:`candidate_dirs` as strings."""
        part = partition_of(hash)
        names = self.dir_names
        return [names[self.primary[part]], *(names[i] for i in self.secondary[part])]

    def search_roots(self, hash: bytes) -> list[str]:
        """Every directory, in the order a lookup tries them: :meth:`candidate_roots`,
        then the others (where a block goes when its primary is full or failing)."""
        roots = self.candidate_roots(hash)
        if len(roots) < len(self.dirs):
            roots += [n for n in self.dir_names if n not in roots]
        return roots

    def candidate_dirs(self, hash: bytes) -> list[Path]:
        """Where the layout places a copy: the primary first, then the secondaries (a
        copy may also sit in any other directory: see :meth:`search_roots`)."""
        part = partition_of(hash)
        return [self.dirs[self.primary[part]], *(self.dirs[i] for i in self.secondary[part])]

    def has_secondaries(self) -> bool:
        """Whether some partition has a secondary that a rebalance would clear."""
        return any(i not in self.read_only for s in self.secondary for i in s)

    @property
    def read_only_dirs(self) -> frozenset[Path]:
        return frozenset(self.dirs[i] for i in self.read_only)

    def is_read_only(self, path: Path) -> bool:
        return path in self.read_only_dirs

    def partitions_of(self, path: Path) -> int:
        """How many partitions ``path`` is primary for."""
        index = self.dirs.index(path)
        return sum(1 for p in self.primary if p == index)

    # -- persistence ----------------------------------------------------------------

    def encode(self) -> bytes:
        obj: dict[str, object] = {
            "dirs": [str(p) for p in self.dirs],
            "primary": list(self.primary),
            "secondary": [list(s) for s in self.secondary],
        }
        if self.read_only:
            # Only when present, so that layouts without read-only dirs encode as before.
            obj["read_only"] = list(self.read_only)
        return bytes(cbor2.dumps(obj))

    @classmethod
    def decode(cls, raw: bytes) -> DataLayout:
        try:
            obj = cbor2.loads(raw)
            dirs = tuple(Path(p) for p in obj["dirs"])
            primary = tuple(int(p) for p in obj["primary"])
            secondary = tuple(tuple(int(i) for i in s) for s in obj["secondary"])
            read_only = tuple(int(i) for i in obj.get("read_only", ()))
        except Exception as exc:  # any decoding failure means a bad row
            raise ConfigError("data_dir", f"stored data layout is unreadable: {exc}") from exc
        if len(primary) != N_PARTITIONS or len(secondary) != N_PARTITIONS:
            raise ConfigError("data_dir", "stored data layout has the wrong number of partitions")
        limit = len(dirs)
        if (
            any(not 0 <= p < limit for p in primary)
            or any(not 0 <= i < limit for s in secondary for i in s)
            or any(not 0 <= i < limit for i in read_only)
        ):
            raise ConfigError("data_dir", "stored data layout refers to unknown directories")
        return cls(dirs, primary, secondary, read_only)
