"""A test-side MQTT client that records everything under hypnolum/v1/#."""
from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import aiomqtt


class Watcher:
    def __init__(self, port: int, filters: tuple[str, ...] = ("hypnolum/v1/#",), **client_kw):
        self.port = port
        self.filters = filters
        self.client_kw = client_kw
        self.latest: dict[str, bytes] = {}
        self.history: dict[str, list[bytes]] = defaultdict(list)
        self.client: aiomqtt.Client | None = None
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "Watcher":
        if self.client is None:  # a subclass may have made its own (credentials, TLS)
            self.client = aiomqtt.Client("127.0.0.1", self.port, **self.client_kw)
        await self.client.__aenter__()
        for f in self.filters:
            await self.client.subscribe(f, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.client.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass  # already disconnected by the broker

    async def _collect(self) -> None:
        async for msg in self.client.messages:
            topic = msg.topic.value
            self.latest[topic] = bytes(msg.payload)
            self.history[topic].append(bytes(msg.payload))
            self.messages.append(msg)

    def text(self, topic: str) -> str | None:
        value = self.latest.get(topic)
        return None if value is None else value.decode()

    def json(self, topic: str):
        value = self.latest.get(topic)
        return None if value is None else json.loads(value)

    def all_json(self, topic: str) -> list:
        return [json.loads(v) for v in self.history[topic]]

    async def publish(self, topic: str, payload) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(topic, data, qos=1)
