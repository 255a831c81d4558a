"""Pod state on ``pods/<pod_id>/state`` and host state on ``hosts/<host_id>/state``:
coalesced, latest wins, never awaited per change.

A pod's state changes with every STATUS (about 1 Hz), every clock-sync step
and every command; with hundreds of pods, one awaited QoS-1 publish per change
kept hundreds of calls in flight and cost more CPU than the EEG itself. Here:

- a change of ``link`` or ``reason`` goes out at once, so every link transition
  is seen on MQTT;
- any other change goes out at most once per ``interval_s`` per pod, rendered
  when it is sent, so the newest state wins and nothing stale is published;
- the messages are handed to the MQTT client without awaiting each one
  (QoS 1, retained, and kept by the bridge for republishing after a reconnect);
- the final state of a session (``offline``) is published with an awaited
  QoS-1 publish by ``final()``, so it is on the broker before hostd moves on.

The host state (the pods it serves; its counters of refused input, busy
answers, handler failures and restarts) changes with every bad message of a
flood; it goes out at most once per ``HOST_INTERVAL_S``, rendered when it is
sent, except that a change of the pods served goes out at once.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from . import topics
from .mqtt import MqttBridge
from .state import OFFLINE

Render = Callable[[], dict[str, Any]]

INTERVAL_S = 0.25  # at most 4 state messages per pod per second, link changes excepted
HOST_INTERVAL_S = 1.0  # at most one host state message a second
_FINAL_AT_ONCE = 8  # awaited final publishes in flight (hostd stopping ends every session at once)


class _Pod:
    __slots__ = ("render", "sent_at", "link", "timer", "pending")

    def __init__(self) -> None:
        self.render: Render | None = None
        self.sent_at = float("-inf")
        self.link: tuple[str, str] | None = None  # (link, reason) last published
        self.timer: asyncio.TimerHandle | None = None
        self.pending = False


class StatePublisher:
    def __init__(self, bridge: MqttBridge, interval_s: float = INTERVAL_S):
        self.bridge = bridge
        self.interval_s = interval_s
        self.sent = 0
        self._pods: dict[str, _Pod] = {}
        self._final = asyncio.Semaphore(_FINAL_AT_ONCE)

    def changed(self, pod_id: str, render: Render, link: str, reason: str) -> None:
        """The pod's state changed; ``render()`` gives its JSON when it is published."""
        p = self._pods.get(pod_id)
        if p is None:
            p = self._pods[pod_id] = _Pod()
        p.render, p.pending = render, True
        if link == OFFLINE:  # the session's end: final() publishes it, awaited
            self._cancel(p)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if (link, reason) != p.link or now - p.sent_at >= self.interval_s:
            self._cancel(p)
            self._send(pod_id)
        elif p.timer is None:
            p.timer = loop.call_at(p.sent_at + self.interval_s, self._send, pod_id)

    def _cancel(self, p: _Pod) -> None:
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None

    def _render(self, pod_id: str) -> dict[str, Any]:
        p = self._pods[pod_id]
        p.timer, p.pending = None, False
        payload = p.render()
        p.link = (payload["link"], payload["reason"])
        p.sent_at = asyncio.get_running_loop().time()
        self.sent += 1
        return payload

    def _send(self, pod_id: str) -> None:
        self.bridge.publish_nowait(topics.pod(pod_id, "state"), self._render(pod_id), qos=1, retain=True)

    async def final(self, pod_id: str) -> None:
        """Publish the pod's latest state now and wait for the broker (a session ended)."""
        p = self._pods.get(pod_id)
        if p is None or not p.pending:
            return
        self._cancel(p)
        async with self._final:
            if p.pending:  # (a newer session of the pod may have published meanwhile)
                await self.bridge.publish(topics.pod(pod_id, "state"), self._render(pod_id), qos=1, retain=True)


class HostStatePublisher:
    """``hosts/<host_id>/state``, retained: the newest ``render()`` at most once per interval."""

    def __init__(self, bridge: MqttBridge, host_id: str, render: Render, interval_s: float = HOST_INTERVAL_S):
        self.bridge = bridge
        self.topic = topics.host(host_id, "state")
        self.render = render
        self.interval_s = interval_s
        self.sent = 0
        self._sent_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def changed(self, at_once: bool = False) -> None:
        """Something in the host state changed: publish it now, or once the interval is over.
        ``at_once`` (the pods served changed): now, whatever the interval."""
        if at_once and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._sent_at + self.interval_s
        if at_once or loop.time() >= due:
            self._send()
        else:
            self._timer = loop.call_at(due, self._send)

    def _send(self) -> None:
        self._timer = None
        self._sent_at = asyncio.get_running_loop().time()
        self.sent += 1
        self.bridge.publish_nowait(self.topic, self.render(), qos=1, retain=True)

    async def final(self) -> None:
        """Publish the latest host state now, waiting for the broker (hostd stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.bridge.publish(self.topic, self.render(), qos=1, retain=True)
