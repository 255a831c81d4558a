"""Back-pressure on set commands: how many hostd carries out at once, how many wait, and
the ``busy`` answer for one it cannot take (docs/hostd.md, "Back-pressure").

hostd takes each command as it reads it from the broker; what it has not read
yet waits in the broker's own queue (bounded by the broker's configuration).
A command read is, at once, one of:

- started: fewer than ``POD_IN_FLIGHT`` commands of its pod id, and fewer than
  ``IN_FLIGHT`` commands in all, are in flight;
- queued behind its pod's commands in flight, in arrival order: at most
  ``POD_QUEUE`` per pod id, and at most ``QUEUE_BYTES`` of payload in all;
- answered ``busy``: ``{"id": <command id>, "ok": false, "busy": true,
  "error": "busy: ...", "field": null}``. It was not carried out and may be
  sent again (its id is not remembered as done).

When a command ends, the next queued one of its pod starts, then queued ones of
other pods while there is room.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

IN_FLIGHT = 256  # commands in flight, all pods together
POD_IN_FLIGHT = 16  # commands in flight for one pod id
POD_QUEUE = 256  # commands queued for one pod id
QUEUE_BYTES = 4 * 1024 * 1024  # payload bytes queued, all pods together

T = TypeVar("T")


def busy_result(cmd_id: str | None, reason: str) -> dict[str, Any]:
    return {"id": cmd_id, "ok": False, "busy": True, "error": f"busy: {reason}; not carried out, try again later",
            "field": None}


@dataclass
class _Line(Generic[T]):
    running: int = 0
    waiting: deque[tuple[T, int]] = field(default_factory=deque)  # (command, payload size)


class CommandGate(Generic[T]):
    """The commands in flight and queued, per pod id (see the module doc)."""

    def __init__(self, total: int = IN_FLIGHT, per_pod: int = POD_IN_FLIGHT, pod_queue: int = POD_QUEUE,
                 queue_bytes: int = QUEUE_BYTES) -> None:
        self.total = total
        self.per_pod = per_pod
        self.pod_queue = pod_queue
        self.queue_bytes = queue_bytes
        self.in_flight = 0
        self.queued = 0
        self.queued_bytes = 0
        self.peak_in_flight = 0
        self.peak_queued = 0
        self.busy: Counter[str] = Counter()  # why commands were answered busy -> how many
        self._lines: dict[str, _Line[T]] = {}

    def admit(self, pod_id: str, command: T, size: int) -> tuple[bool, str | None]:
        """(True, None): start ``command`` now (it is counted in flight); (False, None): it was
        queued; (False, reason): it is busy, and ``busy`` counted it under a short kind."""
        line = self._lines.setdefault(pod_id, _Line())
        if not line.waiting and line.running < self.per_pod and self.in_flight < self.total:
            self._start(line)
            return True, None
        if len(line.waiting) >= self.pod_queue:
            return False, self._refuse("pod", f"pod {pod_id} has {line.running} commands in flight and "
                                              f"{len(line.waiting)} queued, the most hostd holds for one pod")
        if self.queued_bytes + size > self.queue_bytes:
            return False, self._refuse("queue", f"hostd has {self.queued} commands ({self.queued_bytes} bytes) "
                                                f"queued, the most it holds is {self.queue_bytes} bytes")
        line.waiting.append((command, size))
        self.queued += 1
        self.queued_bytes += size
        self.peak_queued = max(self.peak_queued, self.queued)
        return False, None

    def done(self, pod_id: str) -> list[T]:
        """A command of ``pod_id`` ended: the queued commands to start now (counted in flight)."""
        line = self._lines[pod_id]
        line.running -= 1
        self.in_flight -= 1
        ready = self._next(pod_id, line)
        for other, other_line in list(self._lines.items()):
            if self.in_flight >= self.total:
                break
            if other != pod_id:
                ready += self._next(other, other_line)
        self._forget(pod_id, line)
        return ready

    def drain(self) -> list[T]:
        """Every queued command, taken out of the queues (they will not be started)."""
        out = [command for line in self._lines.values() for command, _ in line.waiting]
        for pod_id, line in list(self._lines.items()):
            line.waiting.clear()
            self._forget(pod_id, line)
        self.queued = self.queued_bytes = 0
        return out

    def _next(self, pod_id: str, line: _Line[T]) -> list[T]:
        ready = []
        while line.waiting and line.running < self.per_pod and self.in_flight < self.total:
            command, size = line.waiting.popleft()
            self.queued -= 1
            self.queued_bytes -= size
            self._start(line)
            ready.append(command)
        return ready

    def _start(self, line: _Line[T]) -> None:
        line.running += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _forget(self, pod_id: str, line: _Line[T]) -> None:
        if not line.running and not line.waiting:
            del self._lines[pod_id]

    def _refuse(self, kind: str, reason: str) -> str:
        self.busy[kind] += 1
        return reason

    def to_json(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "queued": self.queued, "peak_in_flight": self.peak_in_flight,
                "peak_queued": self.peak_queued, "busy": dict(sorted(self.busy.items()))}
