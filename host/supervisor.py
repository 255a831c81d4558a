"""hostd's supervised task tree: the retry policy every loop shares, the restart of a
failed subsystem, and the containment of a failed message handler.

hostd runs as a tree of ``asyncio.TaskGroup``s. Its root group holds one task per
subsystem (the MQTT connection, the commands, the pod inputs, circles, the port
scanner, ...), each kept by :meth:`Supervisor.keep`: a subsystem that raises, or
returns although nobody asked it to stop, is logged and started again after a
delay that doubles from ``Backoff.first_s`` up to ``Backoff.max_s`` (back to the
first once a run lasted ``Backoff.stable_s``). A subsystem that fails more than
``budget`` times within ``window_s`` is beyond repair in this process:
:attr:`Supervisor.failure` is set, hostd shuts down and exits non-zero, and
systemd starts it again.

Below a subsystem, every message it handles (a set command, a marker, a circle
definition, a frame from a pod, an event of a session) runs inside
:meth:`Failures.contain`: a handler that raises costs that one message (which
gets an error result where it has a result topic), is counted by handler and is
logged with its traceback; the log filter (host/log.py) keeps such lines bounded.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

# how the log says a subsystem of hostd died (the MQTT fuzzer looks for these words)
ENDED = "ended unexpectedly"


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``first_s``, doubling up to ``max_s``; a run that lasted
    ``stable_s`` or longer starts the next series from ``first_s`` again."""

    first_s: float
    max_s: float
    stable_s: float = 10.0

    def retry(self) -> Retry:
        return Retry(self)


class Retry:
    """One loop's position in its Backoff series."""

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self._next = policy.first_s

    def delay(self) -> float:
        """The delay before the next attempt (and double it for the one after)."""
        delay = self._next
        self._next = min(delay * 2, self.policy.max_s)
        return delay

    def ran(self, seconds: float) -> None:
        """An attempt ran ``seconds`` before it ended: a stable one resets the series."""
        if seconds >= self.policy.stable_s:
            self.reset()

    def reset(self) -> None:
        self._next = self.policy.first_s


async def first(*aws: Awaitable[object]) -> None:
    """Wait until the first of ``aws`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class GaveUp(Exception):
    """A subsystem failed more often than its restart budget allows."""


def describe(problem: BaseException | None) -> str:
    if problem is None:
        return "it returned"
    text = str(problem).splitlines()[0] if str(problem) else ""
    return f"{type(problem).__name__}: {text}" if text else type(problem).__name__


class Supervisor:
    """Keeps hostd's subsystems running (see the module doc)."""

    def __init__(self, backoff: Backoff, budget: int = 5, window_s: float = 60.0,
                 restarts: Counter[str] | None = None, changed: Callable[[], None] | None = None) -> None:
        self.backoff = backoff
        self.budget = budget
        self.window_s = window_s
        self.restarts: Counter[str] = Counter() if restarts is None else restarts  # subsystem -> restarts
        self.changed = changed  # called after each restart is counted
        self.failure: GaveUp | None = None
        self.failed = asyncio.Event()
        self.stopping = False  # set as hostd stops: a subsystem that ends then is not restarted

    def start(self, group: asyncio.TaskGroup, name: str, run: Callable[[], Awaitable[object]]) -> asyncio.Task:
        """Run ``run()`` as subsystem ``name`` in ``group``, restarted whenever it ends."""
        return group.create_task(self.keep(name, run), name=name)

    async def keep(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        retry = self.backoff.retry()
        failures: deque[float] = deque()
        while True:
            started = time.monotonic()
            problem: BaseException | None = None
            try:
                await run()
            except Exception as exc:  # noqa: BLE001  (any failure of a subsystem is this loop's to handle)
                problem = exc
            if self.stopping:
                return
            now = time.monotonic()
            retry.ran(now - started)
            failures.append(now)
            while failures and failures[0] < now - self.window_s:
                failures.popleft()
            if len(failures) > self.budget:
                self._give_up(name, problem, len(failures))
                return
            delay = retry.delay()
            self.restarts[name] += 1
            if self.changed is not None:
                self.changed()
            log.error("subsystem %s %s (%s); restarting it in %g s (restart %d)", name, ENDED, describe(problem),
                      delay, self.restarts[name], exc_info=problem)
            await asyncio.sleep(delay)

    def _give_up(self, name: str, problem: BaseException | None, times: int) -> None:
        self.failure = GaveUp(f"subsystem {name} failed {times} times within {self.window_s:.0f} s, "
                              f"the last time: {describe(problem)}")
        log.critical("subsystem %s %s (%s): %d failures within %.0f s, giving up; hostd exits", name, ENDED,
                     describe(problem), times, self.window_s, exc_info=problem)
        self.failed.set()


class Failures:
    """Message handlers that raised, counted by handler (``set``, ``marker``, ``circles``,
    ``frame``, ``event``, ...)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def contain(self, handler: str, where: str, exc: Exception) -> str:
        """Count and log a handler's failure on one message (``where``: its topic or port);
        returns the error text for that message's result."""
        self.counts[handler] += 1
        log.error("%s handler failed on %s: %s", handler, where, describe(exc), exc_info=exc)
        return f"hostd failed handling this message: {describe(exc)}"

    def to_json(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
