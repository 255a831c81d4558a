"""MQTT bridge: one main connection in a reconnect loop, plus one small
connection per online pod whose last will turns that pod offline.

MQTT allows one will per connection; giving each online pod its own
connection means that if hostd dies (even SIGKILL) the broker itself
publishes every one of its pods as "offline".
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator

import aiomqtt

from . import topics
from .config import Config

log = logging.getLogger(__name__)

_BACKOFF_S = (0.2, 10.0)
_QUEUE = 64


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class MqttBridge:
    def __init__(self, config: Config):
        self.cfg = config.mqtt
        self.host_id = config.host.id
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._retained: dict[str, bytes] = {}  # republished after a reconnect
        self._commands: asyncio.Queue = asyncio.Queue(_QUEUE)
        self._inputs: asyncio.Queue = asyncio.Queue(_QUEUE)  # (pod_id, leaf, payload): markers, participant
        self._pods: dict[str, tuple[asyncio.Task, asyncio.Event]] = {}
        self._closing: dict[str, asyncio.Task] = {}
        self._stop = asyncio.Event()

    def _client_for(self, will_topic: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive,
            will=aiomqtt.Will(will_topic, b"offline", qos=1, retain=True),
        )

    # -- main connection ------------------------------------------------------
    async def run(self) -> None:
        """Keep the main connection up until ``close()``."""
        host_topic = topics.host(self.host_id, "availability")
        backoff = _BACKOFF_S[0]
        while not self._stop.is_set():
            try:
                async with self._client_for(host_topic) as client:
                    await client.subscribe(topics.SET_FILTER, qos=1)
                    for input_filter in topics.INPUT_FILTERS:
                        await client.subscribe(input_filter, qos=1)
                    await client.publish(host_topic, b"online", qos=1, retain=True)
                    for topic, payload in list(self._retained.items()):
                        await client.publish(topic, payload, qos=1, retain=True)
                    self._client = client
                    self.connected.set()
                    log.info("connected to MQTT broker %s:%d", self.cfg.host, self.cfg.port)
                    backoff = _BACKOFF_S[0]
                    await self._serve(client)
                    await client.publish(host_topic, b"offline", qos=1, retain=True)
                    return
            except aiomqtt.MqttError as exc:
                log.warning("MQTT broker %s:%d: %s; retrying in %.1f s", self.cfg.host, self.cfg.port, exc, backoff)
            finally:
                self._client = None
                self.connected.clear()
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, _BACKOFF_S[1])

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Queue incoming set commands until close(); MqttError on link loss."""
        async def consume() -> None:
            async for message in client.messages:
                pod_id = topics.pod_of_set(message.topic.value)
                if pod_id is None:
                    pod_input = topics.pod_input(message.topic.value)
                    if pod_input is not None and not self._inputs.full():
                        self._inputs.put_nowait((*pod_input, bytes(message.payload or b"")))
                    continue
                if self._commands.full():
                    log.warning("command queue full; dropping a command for %s", pod_id)
                    continue
                self._commands.put_nowait((pod_id, bytes(message.payload or b"")))

        consumer = asyncio.create_task(consume())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if consumer.done():
                consumer.result()  # re-raise MqttError
                raise aiomqtt.MqttError("message stream ended")
        finally:
            consumer.cancel()
            stopper.cancel()
            await asyncio.gather(consumer, stopper, return_exceptions=True)

    async def close(self) -> None:
        """Turn every pod offline, publish the host offline, disconnect."""
        for pod_id in list(self._pods):
            self.pod_available(pod_id, False)
        await asyncio.gather(*self._closing.values(), return_exceptions=True)
        self._stop.set()

    # -- publishing -----------------------------------------------------------
    async def publish(self, topic: str, payload: Any, *, qos: int = 0, retain: bool = False) -> bool:
        """Publish JSON (or bytes); False if the broker is not reachable now."""
        data = payload if isinstance(payload, bytes) else _json(payload)
        if retain:
            self._retained[topic] = data
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, data, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            log.debug("publish to %s failed: %s", topic, exc)
            return False
        return True

    def publish_nowait(self, topic: str, payload: Any) -> bool:
        """Publish QoS-0 telemetry without waiting; False if the broker is not reachable now.

        aiomqtt's ``publish`` awaits each message's hand-over to the socket (~250 us of
        CPU a message here); for hundreds of pods' EEG and band powers that is most of
        hostd's time. This hands the message to the underlying paho client's outgoing
        queue instead (the same call aiomqtt makes); paho writes queued messages
        together when the socket is writable.
        """
        client = self._client
        if client is None:
            return False
        data = payload if isinstance(payload, bytes) else _json(payload)
        return client._client.publish(topic, data, 0, False).rc == 0  # paho (aiomqtt 2.x pins paho-mqtt 2)

    async def commands(self) -> AsyncIterator[tuple[str, bytes]]:
        """Set commands as (pod_id, payload), in arrival order."""
        while True:
            yield await self._commands.get()

    async def inputs(self) -> AsyncIterator[tuple[str, str, bytes]]:
        """Per-pod inputs other than set commands as (pod_id, leaf, payload), in arrival order."""
        while True:
            yield await self._inputs.get()

    # -- per-pod availability -------------------------------------------------
    def pod_available(self, pod_id: str, online: bool) -> None:
        """Make ``pods/<id>/availability`` follow the pod, with a will of "offline"."""
        if online and pod_id not in self._pods:
            previous = self._closing.get(pod_id)  # let its "offline" land first
            stop = asyncio.Event()
            task = asyncio.create_task(self._pod_link(pod_id, stop, previous), name=f"availability {pod_id}")
            self._pods[pod_id] = (task, stop)
        elif not online and pod_id in self._pods:
            task, stop = self._pods.pop(pod_id)
            stop.set()
            self._closing[pod_id] = task
            task.add_done_callback(lambda t: self._closing.pop(pod_id, None) if self._closing.get(pod_id) is t else None)

    async def _pod_link(self, pod_id: str, stop: asyncio.Event, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        topic = topics.pod(pod_id, "availability")
        backoff = _BACKOFF_S[0]
        while not stop.is_set():
            try:
                async with self._client_for(topic) as client:
                    await client.publish(topic, b"online", qos=1, retain=True)
                    await stop.wait()
                    await client.publish(topic, b"offline", qos=1, retain=True)
                    return
            except aiomqtt.MqttError as exc:
                log.debug("availability link for %s: %s", pod_id, exc)
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, _BACKOFF_S[1])
