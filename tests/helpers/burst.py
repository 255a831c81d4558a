"""Floods of set commands against a running hostd, and what came back (tests/test_floods.py,
bench/mqtt_burst.py).

:class:`Burst` publishes QoS 1 set commands with ids ``<tag>-<n>`` as fast as the
broker takes them (or at a given rate), reads every result and the pod's EEG
topic, and sorts each command by its answer: ``ok``, ``nack``, ``busy``,
``error`` (any other refusal) or none. The broker is a private mosquitto with the
queue limits of the shipped configuration (host/deploy/mosquitto/hypnolum.conf).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path

import aiomqtt

from hypnolum.broker import PrivateBroker

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONF = ROOT / "host" / "deploy" / "mosquitto" / "hypnolum.conf"
P = "hypnolum/v1/pods"
KINDS = ("ok", "nack", "busy", "error")


def shipped_queue_limits() -> str:
    """The shipped broker's queue and in-flight settings, as mosquitto.conf lines."""
    keep = ("max_inflight_messages", "max_queued_messages", "max_queued_bytes")
    return "".join(line + "\n" for line in SHIPPED_CONF.read_text().splitlines() if line.startswith(keep))


def broker(workdir: Path) -> PrivateBroker:
    """A private mosquitto (open, loopback) with the shipped queue limits, started."""
    return PrivateBroker(workdir, extra_conf=shipped_queue_limits()).start()


def kind(result: dict) -> str:
    if result.get("ok") is True:
        return "ok"
    if "nack" in result:
        return "nack"
    if result.get("busy") is True:
        return "busy"
    return "error"


def command(cmd_id: str, n: int) -> bytes:
    return json.dumps({"id": cmd_id, "scene": {"effect": "solid", "color": [n % 256, 40, 10],
                                               "brightness": 0.3}}).encode()


class Burst:
    """One MQTT client sending set commands to ``pod_id`` and reading their results and the pod's EEG."""

    def __init__(self, port: int, pod_id: str, inflight: int = 1000):
        self.pod_id = pod_id
        quiet = logging.getLogger("hypnolum.burst.mqtt")
        quiet.setLevel(logging.ERROR)  # not a warning per publish while thousands are pending
        self.client = aiomqtt.Client("127.0.0.1", port, identifier=f"burst-{pod_id}-{time.monotonic_ns()}",
                                     max_inflight_messages=inflight, logger=quiet)
        self.results: dict[str, dict] = {}  # command id -> its first result
        self.answers = 0  # every result read, repeated ones included
        self.eeg: list[tuple[int, int]] = []  # (seq, n) of each EEG message, in arrival order
        self.state: dict | None = None  # the pod's latest state
        self.markers: Counter = Counter()  # marker results by kind
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> Burst:
        await self.client.__aenter__()
        await self.client.subscribe(f"{P}/{self.pod_id}/set/result", qos=1)
        await self.client.subscribe(f"{P}/{self.pod_id}/eeg", qos=0)
        await self.client.subscribe(f"{P}/{self.pod_id}/state", qos=1)
        await self.client.subscribe(f"{P}/{self.pod_id}/marker/result", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        try:
            await self.client.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass

    async def _read(self) -> None:
        async for msg in self.client.messages:
            data = json.loads(msg.payload)
            if msg.topic.value.endswith("/eeg"):
                self.eeg.append((data["seq"], data["n"]))
                continue
            if msg.topic.value.endswith("/state"):
                self.state = data
                continue
            if msg.topic.value.endswith("/marker/result"):
                self.markers[kind(data)] += 1
                continue
            self.answers += 1
            self.results.setdefault(str(data.get("id")), data)

    async def burst(self, tag: str, n: int) -> list[str]:
        """Publish ``n`` commands at once: all handed to the MQTT client's queue, which sends them
        as fast as the broker acknowledges; returns their ids once the broker has taken all."""
        ids = [f"{tag}-{i}" for i in range(n)]
        topic = f"{P}/{self.pod_id}/set"
        paho = self.client._client  # aiomqtt's publish waits for each acknowledgement; paho's queues
        sent = [paho.publish(topic, command(cmd_id, i), 1) for i, cmd_id in enumerate(ids)]
        while not all(info.is_published() for info in sent):
            await asyncio.sleep(0.01)
        return ids

    async def burst_markers(self, n: int) -> None:
        """Publish ``n`` markers at once (their results have no id: see ``markers``)."""
        topic = f"{P}/{self.pod_id}/marker"
        await asyncio.gather(*(self.client.publish(topic, json.dumps({"text": f"flood {i}"}).encode(), qos=1)
                               for i in range(n)))

    async def steady(self, tag: str, rate_hz: float, seconds: float) -> list[str]:
        """Publish commands at ``rate_hz`` for ``seconds`` (in 10 ms ticks); returns their ids."""
        ids: list[str] = []
        topic = f"{P}/{self.pod_id}/set"
        start = time.monotonic()
        pending: set[asyncio.Task] = set()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate_hz) + 1
            while len(ids) < due:
                cmd_id = f"{tag}-{len(ids)}"
                task = asyncio.create_task(self.client.publish(topic, command(cmd_id, len(ids)), qos=1))
                pending.add(task)
                task.add_done_callback(pending.discard)
                ids.append(cmd_id)
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
        return ids

    async def answered(self, ids: list[str], timeout: float) -> bool:
        """Wait until every one of ``ids`` has a result (False if ``timeout`` passes first)."""
        deadline = time.monotonic() + timeout
        while any(i not in self.results for i in ids):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def count(self, ids: list[str]) -> Counter:
        """How the commands ``ids`` were answered, by kind; "none" for those without a result."""
        return Counter(kind(self.results[i]) if i in self.results else "none" for i in ids)

    def eeg_lost(self) -> tuple[int, int]:
        """(samples between the first and last EEG message read, of those not in any message)."""
        if not self.eeg:
            return 0, 0
        got: set[int] = set()
        for seq, n in self.eeg:
            got.update(range(seq, seq + n))
        first, last = min(got), max(got)
        return last - first + 1, last - first + 1 - len(got)
