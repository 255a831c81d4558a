"""QoS-0 telemetry to MQTT (EEG, band powers) through one queue and one task.

Every pod produces several telemetry messages a second. One task hands them
to the MQTT client in bursts without awaiting each one (MqttBridge.publish_nowait),
which costs a fraction of a publish call per message, and a slow broker never
holds up a pod's serial link: the queue is bounded and drops the oldest
message when full, counting the drop.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from .mqtt import MqttBridge

log = logging.getLogger(__name__)

_QUEUE = 20000  # messages (about 10 s of 400 streaming pods)
_GATHER_S = 0.02  # added latency, traded for far fewer wake-ups of the MQTT socket
_BURST = 200  # messages handed to the client between two turns of the event loop


class Telemetry:
    def __init__(self, bridge: MqttBridge, limit: int = _QUEUE):
        self.bridge = bridge
        self.dropped = 0
        self.sent = 0
        self.unsent = 0  # broker not reachable at the time: QoS 0, so not kept
        self._queue: collections.deque = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    def put(self, topic: str, payload: Any) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((topic, payload))
        self._ready.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="telemetry")

    async def _run(self) -> None:
        queue, publish = self._queue, self.bridge.publish_nowait
        while True:
            await self._ready.wait()
            self._ready.clear()
            while queue:
                for _ in range(min(len(queue), _BURST)):
                    topic, payload = queue.popleft()
                    if publish(topic, payload):
                        self.sent += 1
                    else:
                        self.unsent += 1
                await asyncio.sleep(0)  # let the client write the burst out
            # gather for a moment: the client then writes many messages per socket wake-up
            await asyncio.sleep(_GATHER_S)

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout``), then stop."""
        if self._task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while self._queue and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
