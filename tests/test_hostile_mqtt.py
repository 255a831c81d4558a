"""Hostile payloads on every topic hostd reads, against a real hostd on a real mosquitto.

Each poison gets a clear error where a result channel exists (or is logged and
skipped where none does), and afterwards hostd still runs and still answers a
good command from its pod with ``ok``.
"""
from __future__ import annotations

import json

import pytest

from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.broker

P = "hypnolum/v1/pods"
C = "hypnolum/v1/circles"
NESTED = b"[" * 1000 + b"]" * 1000  # 2 KB
HUGE_INT = b"1" * 4301
GOOD_SET = {"scene": {"effect": "breathe", "color": [255, 120, 40], "brightness": 0.4}}


class Rig:
    """hostd (recording, so markers have a stream), one fake pod "pod-a", a watcher."""

    def __init__(self, tmp_path, port: int, watch: Watcher):
        self.hostd = Hostd(tmp_path, port, extra=f'[recorder]\nenabled = true\ndir = "{tmp_path / "rec"}"\n'
                                                 "[eeg]\npublish_interval_s = 0.1\n")
        self.watch = watch
        self.pod: FakePod | None = None
        self.asked = 0

    async def start(self) -> None:
        self.hostd.start()
        if self.pod is None:
            self.pod = FakePod(self.hostd.pods_dir / "pod-a.tty", pod_id="pod-a")
            self.pod.plug()
        await wait_until(lambda: self.watch.text(f"{P}/pod-a/availability") == "online", timeout=10, what="pod online")
        await wait_until(lambda: len(self.watch.history[f"{P}/pod-a/eeg"]) >= 2, what="an EEG stream")

    def stop(self) -> None:
        if self.pod is not None:
            self.pod.unplug()
        self.hostd.stop()

    async def ask(self, topic: str, payload: bytes | dict) -> dict:
        """Publish on ``topic``; the next message on ``topic/result``."""
        results = self.watch.history[f"{topic}/result"]
        before = len(results)
        await self.watch.publish(topic, payload)
        proc = self.hostd.proc
        await wait_until(lambda: len(results) > before or proc.poll() is not None, timeout=5,
                         what=f"a result on {topic}/result")
        assert len(results) > before, f"hostd exited with {proc.returncode}, no result on {topic}/result"
        return json.loads(results[before])

    async def assert_alive(self) -> None:
        """hostd runs and carries out a good set command."""
        self.asked += 1
        cmd_id = f"good-{self.asked}"
        assert self.hostd.proc.poll() is None, f"hostd exited with {self.hostd.proc.returncode}"
        result = await self.ask(f"{P}/pod-a/set", {"id": cmd_id, **GOOD_SET})
        assert result == {"id": cmd_id, "ok": True, "ack": "ok"}
        assert self.hostd.proc.poll() is None
        assert "Traceback" not in self.hostd.log_text()


@pytest.fixture
async def watch(mosquitto):
    async with Watcher(mosquitto.port) as w:
        yield w


@pytest.fixture
async def rig(tmp_path, mosquitto, watch):
    r = Rig(tmp_path, mosquitto.port, watch)
    await r.start()
    yield r
    r.stop()


POISONS = [
    (NESTED, "nested deeper than 16"),
    (HUGE_INT, "4301 digits"),
    (b'{"id": "n", "text": "x", "participant": "P1", "t": NaN, "scene": {"effect": "solid"}}', "not a finite number"),
    (b'{"t": 1e999}', "not a finite number"),
    (b"\xff\xfe{}", "not UTF-8"),
]


@pytest.mark.parametrize("leaf", ["set", "marker", "participant"])
async def test_poisons_on_pod_inputs_are_answered_and_hostd_goes_on(rig, leaf):
    for payload, words in POISONS:
        result = await rig.ask(f"{P}/pod-a/{leaf}", payload)
        assert result["ok"] is False and words in result["error"], (payload[:40], result)
        await rig.assert_alive()


async def test_a_huge_set_is_refused_without_being_parsed(rig):
    payload = json.dumps({"id": "big", **GOOD_SET, "pad": [1] * 60_000}).encode()
    result = await rig.ask(f"{P}/pod-a/set", payload)
    assert result["ok"] is False and "more than the limit of 65536" in result["error"]
    await rig.assert_alive()


async def test_participant_code_and_marker_time_are_checked_whole(rig):
    result = await rig.ask(f"{P}/pod-a/participant", {"participant": "P017\n"})
    assert result["ok"] is False and result["field"] == "participant"
    assert (await rig.ask(f"{P}/pod-a/participant", {"participant": "P017"}))["ok"] is True
    result = await rig.ask(f"{P}/pod-a/marker", b'{"text": "lights dim", "t": NaN}')
    assert result["ok"] is False and "t" in result["error"]
    assert (await rig.ask(f"{P}/pod-a/marker", {"text": "lights dim"})) == {"ok": True}
    await rig.assert_alive()


RETAINED = {
    "c-nested": NESTED,
    "c-hash": b'{"pods": ["#"]}',
    "c-plus": b'{"pods": ["pod-a", "+"]}',
    "c-bigint": b'{"pods": ["pod-a"], "group_id": ' + HUGE_INT + b"}",
    "c-list": b"[]",
}


async def test_retained_poisoned_circle_definitions_are_skipped_at_every_start(tmp_path, mosquitto, watch):
    for circle, payload in RETAINED.items():
        await watch.client.publish(f"{C}/{circle}/definition", payload, qos=1, retain=True)
        await watch.client.publish(f"{C}/{circle}/timeline", payload, qos=1, retain=True)
    r = Rig(tmp_path, mosquitto.port, watch)
    try:
        for start in range(2):  # a restart reads the same retained poison
            await r.start()
            await r.assert_alive()
            log = r.hostd.log_text()
            for circle in RETAINED:
                assert f"circles: {C}/{circle}/definition ignored" in log, circle
            assert f"{C}/c-hash/definition ignored: pods.0: Value error, pod id '#' does not match" in log
            r.hostd.stop()
        # and while running: a new poisoned definition
        await r.start()
        await watch.client.publish(f"{C}/c-live/definition", b'{"pods": ["#"]}', qos=1, retain=True)
        await wait_until(lambda: f"{C}/c-live/definition ignored" in r.hostd.log_text(), what="c-live ignored")
        await r.assert_alive()
    finally:
        r.stop()


async def test_poisoned_eeg_of_a_circle_pod_is_skipped(rig):
    await rig.watch.client.publish(f"{C}/c1/definition", b'{"pods": ["pod-a"], "drive": "alpha"}', qos=1, retain=True)
    await wait_until(lambda: len(rig.watch.history[f"{C}/c1/group/test-host"]) >= 1, timeout=10,
                     what="the circle's group value (its EEG is followed)")
    for payload in (NESTED, b'{"seq": ' + HUGE_INT + b"}", b"[]", b'{"seq": 1}', b"NaN"):
        await rig.watch.client.publish(f"{P}/pod-a/eeg", payload, qos=0)
    await wait_until(lambda: rig.hostd.log_text().count(f"circles: {P}/pod-a/eeg ignored") >= 5, what="all ignored")
    await rig.assert_alive()
    before = len(rig.watch.history[f"{C}/c1/group/test-host"])
    await wait_until(lambda: len(rig.watch.history[f"{C}/c1/group/test-host"]) > before + 3,
                     what="group values go on")
