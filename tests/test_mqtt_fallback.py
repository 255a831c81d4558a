"""protocol = "auto": against a broker that speaks only MQTT 3.1.1 (amqtt), hostd falls back and works."""
from __future__ import annotations

import logging

import pytest
from amqtt.broker import Broker

from hypnolum.broker import free_port

from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.broker
P = "hypnolum/v1/pods"


@pytest.fixture
async def mqtt311_broker():
    port = free_port()
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # it logs the refused MQTT 5 connect loudly
    await broker.start()
    yield port
    await broker.shutdown()


async def test_auto_falls_back_to_311_and_serves(tmp_path, mqtt311_broker):
    from aiomqtt import ProtocolVersion

    h = Hostd(tmp_path, mqtt311_broker, mqtt_extra='protocol = "auto"\ntimeout_s = 2\n')
    async with Watcher(mqtt311_broker, protocol=ProtocolVersion.V311) as watch:
        h.start()
        pod = FakePod(h.pods_dir / "pod0.tty", pod_id="pod-a")
        pod.plug()
        try:
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", timeout=15, what="online")
            await watch.publish(f"{P}/pod-a/set", {"id": "f1", "scene": {"effect": "solid"}})
            await wait_until(lambda: watch.json(f"{P}/pod-a/set/result"), timeout=10, what="result")
            assert watch.json(f"{P}/pod-a/set/result") == {"id": "f1", "ok": True, "ack": "ok"}
        finally:
            h.kill()
            pod.unplug()
    log = h.log_text()
    assert "does not speak MQTT 5" in log and "(MQTT 3.1.1)" in log
    assert "Traceback" not in log
