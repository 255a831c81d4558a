"""The console's one MQTT connection: everything it shows comes in here, every
command it sends goes out here.

It subscribes to the pods' availability, state, live LEDs and results, the
hosts' availability and the circles' topics, and to the raw EEG and band
powers of the pods some page is watching (only those: every pod's EEG would
cost the console a decode per batch). The connection is kept up by hostd's own
broker code (host/broker.py: credentials, TLS, MQTT 5 with fallback,
reconnect with backoff). With ``--demo`` the broker is the running demo's
(console/demo_link.py), looked up again whenever the demo changes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from typing import Any, Callable

import aiomqtt

from ..host.broker import Broker, read_until
from ..host.config import MqttConfig
from .live import PREFIX, LiveModel

log = logging.getLogger("hypnolum.console")

SUBSCRIPTIONS = (
    f"{PREFIX}/pods/+/availability",
    f"{PREFIX}/pods/+/state",
    f"{PREFIX}/pods/+/leds",
    f"{PREFIX}/pods/+/set/result",
    f"{PREFIX}/pods/+/marker/result",
    f"{PREFIX}/hosts/+/availability",
    f"{PREFIX}/circles/+/definition",
    f"{PREFIX}/circles/+/timeline",
    f"{PREFIX}/circles/+/group/+",
)
WATCHED_LEAVES = ("eeg", "bands")
PUBLISH_TIMEOUT_S = 5.0


class FeedError(RuntimeError):
    """A publish that could not be made (not connected, or the broker refused it)."""


class Target:
    """Where the broker is: ``resolve()`` gives its settings (raising RuntimeError with a
    reason when there is none yet); ``changed()`` is True once it moved elsewhere."""

    def resolve(self) -> MqttConfig:
        raise NotImplementedError

    def changed(self) -> bool:
        return False


class FixedTarget(Target):
    def __init__(self, mqtt: MqttConfig) -> None:
        self.mqtt = mqtt

    def resolve(self) -> MqttConfig:
        return self.mqtt


class Feed:
    def __init__(self, target: Target, model: LiveModel, on_status: Callable[[dict[str, Any]], None]) -> None:
        self.target = target
        self.model = model
        self.on_status = on_status
        self.client: aiomqtt.Client | None = None
        self.status: dict[str, Any] = {"t": "broker", "connected": False, "where": "", "problem": "starting"}
        self.watchers: Counter[str] = Counter()  # pod id -> pages watching its EEG
        self.published = 0

    def _status(self, **change: Any) -> None:
        self.status = {**self.status, **change}
        self.on_status(self.status)

    async def run(self) -> None:
        """Until cancelled: find the broker, keep a connection to it, read it."""
        while True:
            try:
                mqtt = self.target.resolve()
            except RuntimeError as exc:
                self._status(connected=False, where="", problem=str(exc))
                await asyncio.sleep(1.0)
                continue
            where = f"{mqtt.host}:{mqtt.port}"
            self._status(connected=False, where=where, problem="connecting")
            try:
                broker = Broker(mqtt)
            except (OSError, ValueError) as exc:  # TLS files unusable
                self._status(problem=f"cannot set up TLS: {exc}")
                await asyncio.sleep(5.0)
                continue
            client_id = f"{mqtt.username or 'hypnolum'}-console-{secrets.token_hex(4)}"
            moved = asyncio.Event()
            watcher = asyncio.create_task(self._watch_target(moved))
            try:
                await broker.keep("console", client_id, self._serve_until(moved), moved, level=logging.WARNING)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher  # ended here, not left for the loop's close to find pending
            self.client = None
            self._status(connected=False, problem="the broker moved: reconnecting")

    async def _watch_target(self, moved: asyncio.Event) -> None:
        while not self.target.changed():
            await asyncio.sleep(1.0)
        moved.set()

    def _serve_until(self, moved: asyncio.Event):
        async def serve(client: aiomqtt.Client) -> None:
            # one SUBSCRIBE for all: one round trip, and no window between several for a
            # stop to cancel one while its SUBACK is on the way
            await client.subscribe([(topic, 1) for topic in SUBSCRIPTIONS])
            for pod_id in self.watchers:
                await self._subscribe(client, pod_id)
            self.client = client
            self._status(connected=True, problem="")
            try:
                await read_until(client, moved, self._take)
            except aiomqtt.MqttError as exc:
                self._status(connected=False, problem=f"connection lost: {exc or type(exc).__name__}; retrying")
                raise
            finally:
                self.client = None
        return serve

    def _take(self, message: aiomqtt.Message) -> None:
        self.model.on_message(message.topic.value, bytes(message.payload or b""))

    # -- EEG of watched pods ---------------------------------------------------
    @staticmethod
    async def _subscribe(client: aiomqtt.Client, pod_id: str) -> None:
        await client.subscribe([(f"{PREFIX}/pods/{pod_id}/{leaf}", 0) for leaf in WATCHED_LEAVES])

    async def watch(self, pod_id: str) -> None:
        self.watchers[pod_id] += 1
        if self.watchers[pod_id] == 1 and self.client is not None:
            try:
                await self._subscribe(self.client, pod_id)
            except aiomqtt.MqttError as exc:  # the connection is going: serve() subscribes again
                log.info("subscribing to %s's EEG: %s", pod_id, exc)

    async def unwatch(self, pod_id: str) -> None:
        if self.watchers[pod_id] <= 1:
            del self.watchers[pod_id]
            if self.client is not None:
                try:
                    await self.client.unsubscribe([f"{PREFIX}/pods/{pod_id}/{leaf}" for leaf in WATCHED_LEAVES])
                except aiomqtt.MqttError as exc:
                    log.info("unsubscribing from %s's EEG: %s", pod_id, exc)
        else:
            self.watchers[pod_id] -= 1

    # -- commands --------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement; FeedError if it cannot."""
        client = self.client
        if client is None:
            raise FeedError(f"not connected to the broker ({self.status.get('problem') or 'connecting'})")
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await client.publish(topic, payload, qos=1, retain=retain)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise FeedError(f"the broker did not take it: {exc or type(exc).__name__}") from None
        self.published += 1

