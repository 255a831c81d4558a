"""Pod state on MQTT is coalesced (host/state_publish.py): link changes at once, other changes at
most once per interval with the newest state winning, the final offline state always, retained."""
from __future__ import annotations

import asyncio
import json

import aiomqtt

from hypnolum.host.config import parse
from hypnolum.host.mqtt import MqttBridge
from hypnolum.host.state_publish import StatePublisher

from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

TOPIC = "hypnolum/v1/pods/pod-s/state"


async def test_state_coalesced_latest_wins_links_at_once_final_offline_retained(mosquitto):
    cfg = parse({"host": {"id": "state-host"}, "mqtt": {"port": mosquitto.port, "discovery": False}})
    bridge = MqttBridge(cfg)
    run = asyncio.create_task(bridge.run())
    state = {"pod_id": "pod-s", "link": "connecting", "reason": "", "n": 0}
    publisher = StatePublisher(bridge, interval_s=0.5)

    def change(**kw) -> None:
        state.update(kw)
        publisher.changed("pod-s", lambda: dict(state), state["link"], state["reason"])

    def seen() -> list[dict]:
        return [json.loads(p) for p in watch.history[TOPIC]]

    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        async with Watcher(mosquitto.port) as watch:
            change()
            await wait_until(lambda: len(seen()) == 1, timeout=5, what="first state")
            change(link="online")  # a link change: at once, even within the interval
            await wait_until(lambda: len(seen()) == 2, timeout=0.4, what="link change at once")
            for n in range(1, 21):  # a burst of counter changes: one message, the newest
                change(n=n)
            await wait_until(lambda: len(seen()) == 3, timeout=2, what="coalesced state")
            await asyncio.sleep(0.7)
            assert [s["n"] for s in seen()] == [0, 0, 20]
            assert [s["link"] for s in seen()] == ["connecting", "online", "online"]
            change(n=21)
            change(link="offline", reason="port closed")  # the session's end: only final() publishes it
            await asyncio.sleep(0.7)
            assert seen()[-1]["link"] == "online"
            await publisher.final("pod-s")
            await wait_until(lambda: seen()[-1]["link"] == "offline", timeout=5, what="final offline")
            assert seen()[-1] == {"pod_id": "pod-s", "link": "offline", "reason": "port closed", "n": 21}
            await publisher.final("pod-s")  # nothing new: not published twice
            await asyncio.sleep(0.3)
            assert sum(s["link"] == "offline" for s in seen()) == 1
        # retained: a new subscriber gets the final state
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(TOPIC, qos=1)
            msg = await asyncio.wait_for(anext(aiter(client.messages)), 5)
            assert json.loads(msg.payload)["link"] == "offline" and msg.retain
    finally:
        await bridge.close()
        await asyncio.wait_for(run, 10)
