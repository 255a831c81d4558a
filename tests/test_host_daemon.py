"""hostd end to end: a real mosquitto, hostd as a subprocess, fake pods on ptys."""
from __future__ import annotations

import asyncio
import json
import signal

import pytest

from hypnolum.protocol import codec

from helpers.hostd import Hostd as BaseHostd
from helpers.fake_pod import FakePod, expected_counts
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.broker

P = "hypnolum/v1/pods"


class Hostd(BaseHostd):
    def pod(self, name: str = "pod0", **kw) -> FakePod:
        pod = FakePod(self.pods_dir / f"{name}.tty", **kw)
        pod.plug()
        return pod


@pytest.fixture
async def hostd(tmp_path, mosquitto):
    h = Hostd(tmp_path, mosquitto.port)
    h.start()
    yield h
    h.stop()


@pytest.fixture
async def watch(mosquitto):
    async with Watcher(mosquitto.port) as w:
        yield w


async def test_pod_goes_online_and_publishes_state_and_eeg(hostd, watch):
    pod = hostd.pod(pod_id="pod-a")
    await wait_until(lambda: watch.text("hypnolum/v1/hosts/test-host/availability") == "online", what="host online")
    await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", what="pod online")
    await wait_until(lambda: (watch.json(f"{P}/pod-a/state") or {}).get("counters", {}).get("pod"), what="status")
    state = watch.json(f"{P}/pod-a/state")
    assert state["link"] == "online" and state["pod_id"] == "pod-a"
    assert state["port"] == str(pod.link)
    assert state["fingerprint"] == f"0x{codec.FINGERPRINT:08x}"
    assert state["capabilities"] == {"led_count": 16, "eeg_channels": 8, "sample_rate_hz": 250}
    assert state["counters"]["pod"]["mem_free"] == 50000
    await wait_until(lambda: len(watch.history[f"{P}/pod-a/eeg"]) >= 3, what="eeg batches")
    batches = watch.all_json(f"{P}/pod-a/eeg")
    b = batches[-1]
    # the pod sends 5 samples a batch; hostd gathers them into one message per publish interval
    assert b["n"] >= 5 and b["channels"] == 8 and b["rate_hz"] == 250 and len(b["samples"]) == b["n"]
    assert b["samples"][4][7] == expected_counts(b["seq"], 4, 7)
    assert b["scale_uv"] == pytest.approx(0.0223517, rel=1e-5)
    assert all(later["seq"] == earlier["seq"] + earlier["n"] for earlier, later in zip(batches, batches[1:]))
    pod.unplug()


async def test_set_command_results(hostd, watch):
    pod = hostd.pod(pod_id="pod-a")
    pod.nack_effects["off"] = "safety"
    await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", what="pod online")
    results = f"{P}/pod-a/set/result"

    async def send(payload, topic=f"{P}/pod-a/set"):
        before = len(watch.history[results if "pod-a" in topic else topic + "/result"])
        await watch.publish(topic, payload)
        key = results if "pod-a" in topic else topic + "/result"
        await wait_until(lambda: len(watch.history[key]) > before, what=f"result of {payload!r}")
        return json.loads(watch.history[key][-1])

    ok = await send({"id": "c1", "scene": {"effect": "breathe", "color": [255, 120, 40], "brightness": 0.4,
                                           "transition_ms": 500, "period_ms": 4000}})
    assert ok == {"id": "c1", "ok": True, "ack": "ok"}
    assert pod.scenes[-1][1] == {"effect": "breathe", "brightness": 102, "color": [255, 120, 40],
                                 "transition_ms": 500, "period_ms": 4000, "palette": "warm", "flags": 0, "params": []}
    await wait_until(lambda: (watch.json(f"{P}/pod-a/state") or {}).get("scene", {}) and
                     watch.json(f"{P}/pod-a/state")["scene"]["effect"] == "breathe", what="acked scene in state")

    assert await send({"id": "c2", "scene": {"effect": "off"}}) == {"id": "c2", "ok": False, "nack": "safety"}

    bad = await send({"id": "c3", "scene": {"effect": "solid", "color": [1, 300, 2]}})
    assert bad["id"] == "c3" and bad["ok"] is False and bad["field"] == "scene.color.1"
    assert bad["error"].startswith("scene.color.1: ")
    bad = await send({"id": "c4", "scene": {"effect": "disco"}})
    assert bad["field"] == "scene.effect"
    bad = await send({"id": "c5", "scene": {"effect": "solid", "brightness": 2}})
    assert bad["field"] == "scene.brightness"
    bad = await send(b"{not json")
    assert bad["id"] is None and bad["ok"] is False and "invalid JSON" in bad["error"]
    bad = await send({"id": "c6", "scene": {"effect": "solid"}}, topic=f"{P}/nobody/set")
    assert bad == {"id": "c6", "ok": False, "error": "pod nobody is not connected to host test-host",
                   "field": "pod_id"}
    await wait_until(lambda: (watch.json("hypnolum/v1/hosts/test-host/state") or {}).get("bad_commands") == 5,
                     what="bad commands counted")
    pod.drop_commands = 3  # first try + 2 retries all lost
    timeout = await send({"id": "c7", "scene": {"effect": "solid"}})
    assert timeout["ok"] is False and timeout["error"].startswith("timeout")
    assert len({seq for seq, _ in pod.scenes[-3:]}) == 1  # re-sent with the same seq
    assert hostd.proc.poll() is None
    pod.unplug()


async def test_fingerprint_mismatch_is_refused(hostd, watch):
    pod = hostd.pod(pod_id="pod-old", fingerprint=0x0BADF00D)
    await wait_until(lambda: (watch.json(f"{P}/pod-old/state") or {}).get("link") == "refused", what="refused")
    state = watch.json(f"{P}/pod-old/state")
    expected = "unknown schema fingerprint 0x0badf00d and no message table in HELLO"
    assert state["reason"] == expected
    await wait_until(lambda: f"WARNING hypnolum.host.session: pod pod-old refused: {expected}" in hostd.log_text(),
                     what="log line")
    assert watch.text(f"{P}/pod-old/availability") is None
    pod.unplug()


async def test_unplug_and_replug_reconnects(hostd, watch):
    pod = hostd.pod(pod_id="pod-a")
    avail = f"{P}/pod-a/availability"
    await wait_until(lambda: watch.text(avail) == "online", what="online")
    pod.unplug()
    await wait_until(lambda: watch.text(avail) == "offline", what="offline after unplug")
    await wait_until(lambda: watch.json(f"{P}/pod-a/state")["link"] == "offline", what="state offline")
    pod.plug()
    await wait_until(lambda: watch.text(avail) == "online", what="online after replug")
    assert watch.history[avail][-3:] == [b"online", b"offline", b"online"]
    pod.unplug()


async def test_two_ports_with_one_pod_id_refuse_the_second(hostd, watch):
    first = hostd.pod("a", pod_id="twin")
    await wait_until(lambda: watch.text(f"{P}/twin/availability") == "online", what="first online")
    second = hostd.pod("b", pod_id="twin")
    await wait_until(lambda: "pod twin refused: pod id twin is already connected on" in hostd.log_text(),
                     what="refusal logged")
    assert watch.json(f"{P}/twin/state")["port"] == str(first.link)
    first.unplug()
    second.unplug()


async def test_sigkill_turns_pods_offline_through_the_will(hostd, watch):
    pods = [hostd.pod(f"p{i}", pod_id=f"pod-{i}") for i in range(2)]
    for i in range(2):
        await wait_until(lambda: watch.text(f"{P}/pod-{i}/availability") == "online", what=f"pod-{i} online")
    hostd.proc.send_signal(signal.SIGKILL)
    for i in range(2):
        # the broker notices the dead TCP connections at once (socket closed by the kernel)
        await wait_until(lambda: watch.text(f"{P}/pod-{i}/availability") == "offline", timeout=10, what="will")
    await wait_until(lambda: watch.text("hypnolum/v1/hosts/test-host/availability") == "offline", what="host will")
    for p in pods:
        p.unplug()


async def test_sigterm_stops_gracefully(hostd, watch):
    pod = hostd.pod(pod_id="pod-a")
    await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", what="online")
    hostd.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(hostd.proc.wait, 10) == 0
    await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "offline", what="pod offline")
    await wait_until(lambda: watch.json(f"{P}/pod-a/state")["link"] == "offline", what="state offline")
    assert watch.text("hypnolum/v1/hosts/test-host/availability") == "offline"
    assert "Traceback" not in hostd.log_text()
    pod.unplug()
