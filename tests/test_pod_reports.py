"""What the pod tells the host about its light, end to end on real parts.

The real firmware runs on an emulated pod (32-bit MicroPython), hostd's
PodSession talks to it over the pty, and in the last test a real hostd
publishes to a real mosquitto:

* a refused scene names the field and the range it allows (NACK detail);
* the participant's stop (FADE_SAFE) reaches the safe glow within 2 s and
  holds it against the shared timeline until an explicit scene;
* the pod reports the scene it shows (SCENE_SHOWN) with who chose it, also to
  a new session (a restarted hostd) and after it faded to safe on its own;
* the live LED colours (LEDS) match the frames the strip shows, and hostd
  publishes them on ``pods/<id>/leds`` at most 5 times a second.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from hypnolum.emulator.runner import Emulator
from hypnolum.host.config import PodsConfig
from hypnolum.host.leds import LedPreview
from hypnolum.host.session import PodSession
from hypnolum.host.transport.serial import SerialTransport
from hypnolum.protocol.messages import EFFECT_PERIODS

from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.micropython, pytest.mark.timeout(120)]

FAST = PodsConfig(heartbeat_timeout_s=1.0, ping_interval_s=0.2, connect_interval_s=0.1,
                  command_timeout_s=0.3, command_retries=3)
GLOW = bytes(c * 28 // 255 for c in (255, 120, 36))  # firmware/pod/render.py SAFE_COLOR at brightness 28
P = "hypnolum/v1/pods"


def scene(effect: str, color=(255, 255, 255), brightness=255, period_ms=0, params=()) -> dict:
    return {"effect": effect, "brightness": brightness, "color": list(color), "transition_ms": 0,
            "period_ms": period_ms, "palette": "warm", "flags": 0, "params": list(params)}


class Session:
    """A PodSession on a pod's pty, run as a task; its LED previews collected."""

    def __init__(self, tty: str):
        self.tty = tty
        self.previews: list[LedPreview] = []

    async def __aenter__(self) -> PodSession:
        self.transport = SerialTransport(self.tty)
        await self.transport.open()
        self.s = PodSession(self.transport, FAST, "test-host")
        self.task = asyncio.create_task(self.s.run())
        self.drain = asyncio.create_task(self._drain())
        await wait_until(lambda: self.s.state.link == "online", timeout=20, what="pod online")
        return self.s

    async def _drain(self) -> None:
        while True:
            ev = await self.s.events.get()
            if isinstance(ev, LedPreview):
                self.previews.append(ev)

    async def __aexit__(self, *exc) -> None:
        for t in (self.task, self.drain):
            t.cancel()
        await asyncio.gather(self.task, self.drain, return_exceptions=True)
        await self.transport.close()


def near(rgb: bytes, want: bytes, tol: int = 1) -> bool:
    return len(rgb) % 3 == 0 and all(abs(a - b) <= tol for a, b in zip(rgb, want * (len(rgb) // 3)))


@pytest.fixture
async def emu(tmp_path):
    async with Emulator(1, tmp_path / "emu") as e:
        yield e


async def test_refusals_name_the_field_and_a_stop_fades_within_2_s_and_holds(emu):
    pod = emu["pod-01"]
    link = Session(emu.ports["pod-01"])
    async with link as s:
        assert s.state.scene is None  # dark since boot: the pod reports no scene
        # the pod names the refused field and its range (protocol/nack.py)
        answer, reason = await s.command("scene", scene("heartbeat", period_ms=4000))
        assert (answer, reason, reason.field, reason.allowed) == ("nack", "bad_param", "period_ms", [500, 3000])
        answer, reason = await s.command("scene", scene("tide", period_ms=10000, params=[0]))
        assert (reason, reason.detail()) == ("bad_param", {"field": "params.0", "allowed": [1, 100]})
        assert await s.command("scene", scene("heartbeat", period_ms=EFFECT_PERIODS["heartbeat"][2])) == ("ack", None)

        assert await s.command("scene", scene("solid")) == ("ack", None)
        await wait_until(lambda: s.state.scene and s.state.scene["effect"] == "solid", what="reported scene")
        assert s.state.scene == dict(scene("solid"), source="set", stopped=False, link_safe=False, night=False)
        await pod.leds.wait_for(lambda f: f.all((255, 255, 255)), timeout=10)
        # the live preview is the strip as shown: 30 LEDs, one segment each, about 5 a second
        await wait_until(lambda: link.previews and link.previews[-1].rgb == b"\xff" * 90, what="white preview")
        n0, t0 = len(link.previews), time.monotonic()
        await asyncio.sleep(2.0)  # the span we count over, not a wait for a condition
        rate = (len(link.previews) - n0) / (time.monotonic() - t0)
        # at most 5 a second; fewer when the link or the machine is busy (the preview goes
        # only while the link has room: the first thing dropped), never none
        assert 1.0 <= rate <= 5.5, rate
        assert {(p.led_count, p.segments) for p in link.previews} == {(30, 30)}

        # the participant's stop: the glow within 2 s (the pod's own clock and the wall clock)
        sent = time.monotonic()
        assert await s.command("fade_safe", {}) == ("ack", None)
        glow = await pod.leds.wait_for(lambda f: near(f.rgb, GLOW), timeout=5)
        white = [f for f in pod.leds.history if f.all((255, 255, 255))][-1]
        assert (glow.ticks_ms - white.ticks_ms) % (1 << 30) <= 2000, (glow.ticks_ms, white.ticks_ms)
        assert glow.host_time - sent <= 2.0, glow.host_time - sent
        await wait_until(lambda: s.state.scene["stopped"], what="the stop reported")
        assert s.state.scene == dict(scene("solid", (255, 120, 36), 28), source="set", stopped=True,
                                     link_safe=False, night=False)
        # held: a timeline scene is acknowledged and not shown
        at = s.clock.pod_ticks_us(time.time_ns() / 1000 + 200_000)
        assert await s.command("scene_at", dict(scene("solid", (0, 0, 255)), at_us=at)) == ("ack", None)
        await asyncio.sleep(1.0)  # past the instant
        assert near(pod.leds.last_rgb(), GLOW) and s.state.scene["stopped"]
        # an explicit scene ends the stop
        assert await s.command("scene", scene("solid", (0, 0, 255))) == ("ack", None)
        await wait_until(lambda: not s.state.scene["stopped"], what="the stop ended")
        await pod.leds.wait_for(lambda f: f.all((0, 0, 255)), timeout=10)


async def test_a_new_session_learns_what_the_pod_shows(emu):
    tty = emu.ports["pod-01"]
    async with Session(tty) as s:
        # a timeline scene: reported when it comes due, with its source
        at = s.clock.pod_ticks_us(time.time_ns() / 1000 + 300_000) if s.clock.synced else None
        if at is None:
            await wait_until(lambda: s.clock.synced, what="clock synced")
            at = s.clock.pod_ticks_us(time.time_ns() / 1000 + 300_000)
        breathe = scene("breathe", (255, 160, 60), period_ms=4000)
        assert await s.command("scene_at", dict(breathe, at_us=at)) == ("ack", None)
        assert s.state.scene is None  # not yet due
        await wait_until(lambda: s.state.scene, what="the timeline scene reported")
        assert s.state.scene == dict(breathe, source="timeline", stopped=False, link_safe=False, night=False)
    # a restarted hostd is told at once (the pod's answer to CONNECT)
    async with Session(tty) as s:
        await wait_until(lambda: s.state.scene, timeout=2, what="scene after CONNECT")
        assert s.state.scene["effect"] == "breathe" and s.state.scene["source"] == "timeline"
    await asyncio.sleep(3.0)  # longer than the pod's fade_after_ms (2 s): it fades to safe on its own
    async with Session(tty) as s:
        await wait_until(lambda: s.state.scene, timeout=2, what="scene after CONNECT")
        assert s.state.scene == dict(scene("solid", (255, 120, 36), 28), transition_ms=4000, source="pod",
                                     stopped=False, link_safe=True, night=False)


async def test_hostd_publishes_leds_and_the_reported_scene(tmp_path, mosquitto, emu):
    hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
    async with Watcher(mosquitto.port) as watch:
        hostd.start()
        try:
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="online")
            await watch.publish(f"{P}/pod-01/set", {"id": "r1", "scene": {"effect": "solid", "color": [255, 0, 0]}})
            leds = await wait_until(lambda: (m := watch.json(f"{P}/pod-01/leds")) and m["rgb"] == "ff0000" * 30 and m,
                                    timeout=10, what="red on the leds topic")
            assert set(leds) == {"led_count", "segments", "rgb", "at"} and (leds["led_count"], leds["segments"]) == (30, 30)
            assert emu["pod-01"].leds.last_rgb() == bytes((255, 0, 0)) * 30
            n0, t0 = len(watch.history[f"{P}/pod-01/leds"]), time.monotonic()
            await asyncio.sleep(2.0)  # the span we count over
            rate = (len(watch.history[f"{P}/pod-01/leds"]) - n0) / (time.monotonic() - t0)
            assert 1.0 <= rate <= 5.5, rate  # at most 5 a second, as the pod sends them; never none
            leds_msgs = [m for m in watch.messages if m.topic.value == f"{P}/pod-01/leds"]
            assert all(m.qos == 0 and not m.retain for m in leds_msgs)
            state = await wait_until(lambda: (st := watch.json(f"{P}/pod-01/state")) and st["scene"]
                                     and st["scene"]["color"] == [255, 0, 0] and st, what="state scene")
            assert state["scene"]["source"] == "set"
            # hostd gone for longer than the pod's fade_after_ms, then back: the state says what it shows
            hostd.kill()
            await asyncio.sleep(2.5)  # the pod's silence, not a wait for a condition
            hostd.start()
            state = await wait_until(lambda: (st := watch.json(f"{P}/pod-01/state")) and st["link"] == "online"
                                     and st["scene"] and st["scene"]["source"] == "pod" and st,
                                     timeout=20, what="state after the restart")
            assert state["scene"]["link_safe"] and state["scene"]["brightness"] == 28
        finally:
            hostd.kill()
    assert "Traceback" not in hostd.log_text(), hostd.log_text()[-3000:]
