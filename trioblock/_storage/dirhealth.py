"""The health of the data directories of one block store: the node's one record of it.

The decisions are ``_core.dirhealth``'s; this holds the state (under one
``threading.Lock``: writes, reads and probes report from worker threads), logs one line
when a directory changes state (never one per block), and does the probes:

- a **full** directory is ok again when ``statvfs`` shows at least ``margin`` bytes
  free (the largest block fits);
- a **failing** one when a probe file at its top (``trioblock-marker.tmp<8 hex>``,
  which start-up removes if a crash leaves it) is created, written, fsynced, and
  removed with its directory fsynced.

The node's background task (``_node.dirwatch``) asks :meth:`DirHealthBook.due` which
directories to probe and when; a deletion in a full directory makes it due at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .._core.dirhealth import (
    NO_SPACE,
    PROBE_FIRST,
    DataDirState,
    DirHealth,
    after_error,
    after_failed_probe,
    after_read,
    after_write,
    pick_dir,
)
from .._core.disk import Disk
from ..errors import DiskError, DiskFullError
from .fileops import write_all
from .paths import MARKER_NAME, temp_suffix

log = logging.getLogger("trioblock.storage")

#: What a probe of a failing directory writes (and fsyncs) before removing it.
PROBE_DATA = b"trioblock probe\n" * 256


@dataclass(frozen=True)
class DirHealthView:
    """One directory's health as shown to callers."""

    path: str
    state: DataDirState
    errors: int
    last_error: str | None


def describe(exc: OSError) -> str:
    """A short account of a disk error: its message and, when known, its path."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text}: {exc.filename}" if exc.filename else text


class DirHealthBook:
    """Per-directory :class:`DirHealth` of a store's writable and read-only dirs."""

    def __init__(self, roots: Sequence[str], disk: Disk, *, margin: int) -> None:
        self._lock = threading.Lock()
        self._disk = disk
        self._health = {r: DirHealth() for r in roots}
        #: monotonic seconds (the caller's clock) of each directory's next probe
        self._next_probe: dict[str, float] = {}
        #: free bytes a full directory needs to take blocks again
        self.margin = margin
        #: prefix of log lines (the node's id, set by the node)
        self.label = ""

    # -- reading the state ----------------------------------------------------------

    def state(self, root: str) -> DataDirState:
        h = self._health.get(root)
        return DataDirState.OK if h is None else h.state

    def failing(self, root: str) -> bool:
        return self.state(root) is DataDirState.FAILING

    def views(self) -> list[DirHealthView]:
        with self._lock:
            return [
                DirHealthView(r, h.state, h.errors, h.last_error) for r, h in self._health.items()
            ]

    def view(self, root: str) -> DirHealthView:
        with self._lock:
            h = self._health[root]
            return DirHealthView(root, h.state, h.errors, h.last_error)

    # -- choosing where a block goes --------------------------------------------------

    def pick(self, order: Sequence[str], tried: Collection[str]) -> str | None:
        """The directory a new block goes to (``_core.dirhealth.pick_dir``), or None."""
        with self._lock:
            states = {r: self._health[r].state for r in order}
        return pick_dir(order, states, tried, self._has_room)

    def no_room(
        self, order: Sequence[str], last: OSError | None, tried: Sequence[str]
    ) -> DiskError:
        """The error of a write that no directory took (``DiskFullError`` when a
        directory is full), naming the directory it last tried or the one that stops it."""
        with self._lock:
            states = {r: self._health[r].state for r in order}
        full = [r for r in order if states[r] is DataDirState.FULL]
        if last is not None and tried:
            code = last.errno
            where = tried[-1]
            why = describe(last)
            if len(tried) > 1:
                why += f" (also tried {', '.join(tried[:-1])})"
        elif full:
            code, where, why = errno.ENOSPC, full[0], "the data directory is full"
        else:
            code, where = errno.EIO, order[0] if order else ""
            why = "every writable data directory is failing"
        kind = DiskFullError if code in NO_SPACE or (full and last is None) else DiskError
        return kind(where, code, why)

    def _has_room(self, root: str) -> bool:
        try:
            return self._disk.statvfs(root).free >= self.margin
        except OSError:
            return False

    # -- what happened ------------------------------------------------------------------

    def wrote(self, root: str) -> None:
        """A write in ``root`` succeeded."""
        with self._lock:
            h = self._health.get(root)
            if h is None or h == DirHealth():
                return
            self._set(root, after_write(h), "a write succeeded")

    def read(self, root: str) -> None:
        """A read in ``root`` succeeded."""
        h = self._health.get(root)
        if h is None or not h.errors:  # the common case, without the lock
            return
        with self._lock:
            self._health[root] = after_read(self._health[root])

    def failed(self, root: str, exc: OSError) -> None:
        """An operation in ``root`` failed with ``exc``."""
        if isinstance(exc, FileNotFoundError):
            return
        with self._lock:
            h = self._health.get(root)
            if h is not None:
                self._set(root, after_error(h, exc.errno, describe(exc)), describe(exc))

    def freed(self, root: str) -> None:
        """A copy in ``root`` was deleted: a full directory is looked at again soon."""
        with self._lock:
            h = self._health.get(root)
            if h is not None and h.state is DataDirState.FULL:
                self._next_probe[root] = 0.0

    def clear(self, root: str) -> DataDirState:
        """The operator says ``root`` works: ok again, errors forgotten. Returns the
        state it had."""
        with self._lock:
            h = self._health[root]
            if h != DirHealth():
                self._set(root, DirHealth(), "cleared by the operator")
            return h.state

    def _set(self, root: str, new: DirHealth, why: str) -> None:
        old = self._health[root]
        self._health[root] = new
        if new.state is old.state:
            return
        who = f"{self.label}: " if self.label else ""
        if new.state is DataDirState.FULL:
            log.error(
                "%sdata directory %s is full (%s): new blocks go to the node's other data "
                "directories until space is freed",
                who,
                root,
                why,
            )
        elif new.state is DataDirState.FAILING:
            log.error(
                "%sdata directory %s is failing after %d errors in a row (last: %s): no new "
                "blocks are written there until a probe write succeeds or an operator "
                "clears it (trioblock dir clear)",
                who,
                root,
                new.errors,
                why,
            )
        else:
            log.warning(
                "%sdata directory %s is ok again (was %s: %s)", who, root, old.state.value, why
            )
        if new.state is DataDirState.OK:
            self._next_probe.pop(root, None)

    # -- probes ---------------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """The directories to probe at ``now`` (monotonic seconds); schedules the first
        probe of a directory newly full or failing."""
        out: list[str] = []
        with self._lock:
            for root, h in self._health.items():
                if h.state is DataDirState.OK:
                    continue
                at = self._next_probe.get(root)
                if at is None:
                    delay = PROBE_FIRST if h.state is DataDirState.FULL else h.probe_delay
                    self._next_probe[root] = now + delay
                elif at <= now:
                    out.append(root)
        return out

    def probe_sync(self, root: str, now: float) -> DataDirState:
        """Probe ``root`` (module rules) and return its state after (blocking)."""
        state = self.state(root)
        if state is DataDirState.FULL:
            ok, why = self._has_room(root), "space was freed"
        elif state is DataDirState.FAILING:
            try:
                self._probe_write(root)
            except OSError as exc:
                ok, why = False, describe(exc)
            else:
                ok, why = True, "a probe write and fsync succeeded"
        else:
            return state
        with self._lock:
            h = self._health[root]
            if h.state is not state:
                return h.state  # changed meanwhile: the next round looks again
            if ok:
                self._set(root, after_write(h), why)
            elif state is DataDirState.FAILING:
                h = after_failed_probe(h, why)
                self._health[root] = h
                self._next_probe[root] = now + h.probe_delay
            else:
                self._next_probe[root] = now + PROBE_FIRST
            return self._health[root].state

    def _probe_write(self, root: str) -> None:
        disk = self._disk
        top = disk.open_dir(root)
        try:
            name = MARKER_NAME + temp_suffix()
            fd = disk.create_at(top, name)
            try:
                try:
                    write_all(disk, fd, PROBE_DATA)
                    disk.fsync(fd)
                finally:
                    disk.close(fd)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    disk.unlink_at(top, name)
            disk.fsync(top)
        finally:
            disk.close(top)


__all__ = ["DirHealthBook", "DirHealthView", "describe"]
