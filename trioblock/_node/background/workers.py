"""Background workers and the loop that runs them.

A :class:`Worker` does one unit of work per :meth:`~Worker.work` call and says what it
wants next: run again at once (``BUSY``), sleep a while (``Throttled``), wait for
:meth:`~Worker.wait_for_work` (``IDLE``), or stop (``DONE``). :func:`run_worker` loops
one worker inside the node's nursery; an exception from a unit is logged, counted in the
worker's info and retried after a short, growing delay — a worker never takes the node
down. Every unit is safe to interrupt: durable writes run to completion in their thread
and queue entries are removed only after their successor is written.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import trio
from trio_util import move_on_when

log = logging.getLogger("trioblock.workers")

ERROR_RETRY_MIN = 1.0
ERROR_RETRY_MAX = 60.0


class WorkerState(enum.Enum):
    """What a worker is doing: working, sleeping between units, waiting for work, done."""

    BUSY = "busy"
    THROTTLED = "throttled"
    IDLE = "idle"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Throttled:
    """Result of a unit after which the worker sleeps ``seconds``."""

    seconds: float


StepResult = WorkerState | Throttled


@dataclass(frozen=True)
class WorkerInfo:
    """What ``BlockManager.workers()`` reports for one worker."""

    name: str
    state: str
    queue_length: int | None = None
    errors: int = 0
    consecutive_errors: int = 0
    tranquility: int | None = None
    progress: float | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    info: str | None = None


class Worker:
    """Base class of background workers; subclasses implement ``work``."""

    name: str = "worker"

    def __init__(self) -> None:
        self.state = WorkerState.IDLE
        self.errors = 0
        self.consecutive_errors = 0
        self.last_error: str | None = None
        self.last_error_at: int | None = None

    async def work(self) -> StepResult:
        raise NotImplementedError

    async def wait_for_work(self) -> None:
        """Return when there may be work again. The default waits forever."""
        await trio.sleep_forever()

    def info(self) -> WorkerInfo:
        """Subclasses add queue length, progress and so on with ``dataclasses.replace``."""
        return WorkerInfo(
            name=self.name,
            state=self.state.value,
            errors=self.errors,
            consecutive_errors=self.consecutive_errors,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
        )


def with_details(info: WorkerInfo, **details: object) -> WorkerInfo:
    return replace(info, **details)  # type: ignore[arg-type]


async def _sleep_unless(stopping: trio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stopping`` is set meanwhile."""
    with trio.move_on_after(seconds):
        await stopping.wait()


async def run_worker(
    worker: Worker,
    stopping: trio.Event,
    now_msec: Callable[[], int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Loop ``worker`` until it is done or ``stopping`` is set.

    ``now_msec`` is the node clock's ``now_msec`` (for error timestamps).
    """
    task_status.started()
    while not stopping.is_set():
        try:
            result = await worker.work()
        except Exception as exc:  # a worker logs and counts what it catches
            worker.errors += 1
            worker.consecutive_errors += 1
            worker.last_error = f"{type(exc).__name__}: {exc}"
            worker.last_error_at = now_msec()
            delay = min(ERROR_RETRY_MAX, ERROR_RETRY_MIN * 2 ** (worker.consecutive_errors - 1))
            log.warning("%s: error (retrying in %.0fs): %s", worker.name, delay, worker.last_error)
            worker.state = WorkerState.THROTTLED
            await _sleep_unless(stopping, delay)
            continue
        worker.consecutive_errors = 0
        if isinstance(result, Throttled):
            worker.state = WorkerState.THROTTLED
            if result.seconds > 0 and math.isfinite(result.seconds):
                await _sleep_unless(stopping, result.seconds)
            else:
                await trio.lowlevel.checkpoint()
        elif result is WorkerState.BUSY:
            worker.state = WorkerState.BUSY
            await trio.lowlevel.checkpoint()
        elif result is WorkerState.IDLE:
            worker.state = WorkerState.IDLE
            async with move_on_when(stopping.wait):
                await worker.wait_for_work()
        else:
            worker.state = WorkerState.DONE
            return
    worker.state = WorkerState.DONE


class WorkerRegistry:
    """The node's running workers: started in its nursery, stopped between units.

    ``stop()`` sets ``stopping`` and waits until every worker has left its loop.
    """

    def __init__(self, stopping: trio.Event, now_msec: Callable[[], int]) -> None:
        self._stopping = stopping
        self._now_msec = now_msec
        self._workers: list[Worker] = []
        self._running = 0
        self._all_stopped = trio.Event()

    def add(self, nursery: trio.Nursery, worker: Worker) -> None:
        """Run ``worker`` in ``nursery`` until it is done or the node stops."""
        self._workers.append(worker)
        self._running += 1
        nursery.start_soon(self._run, worker, name=f"worker {worker.name}")

    async def _run(self, worker: Worker) -> None:
        try:
            await run_worker(worker, self._stopping, self._now_msec)
        finally:
            self._running -= 1
            self._workers.remove(worker)
            if self._running == 0:
                self._all_stopped.set()

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers))

    def infos(self) -> list[WorkerInfo]:
        return [w.info() for w in self._workers]

    async def stop(self) -> None:
        self._stopping.set()
        if self._running:
            await self._all_stopped.wait()


__all__ = [
    "StepResult",
    "Throttled",
    "Worker",
    "WorkerInfo",
    "WorkerRegistry",
    "WorkerState",
    "run_worker",
    "with_details",
]
