"""PodSession over the real serial transport and a fake pod on a pty (no broker)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from hypnolum.host.config import PodsConfig
from hypnolum.host.events import ENDED, STATE_CHANGED, Bands, EegBatch, Ended, StateChanged
from hypnolum.host.session import CommandTimeout, LocalClaims, NotOnline, PodSession
from hypnolum.host.transport.serial import SerialTransport
from hypnolum.protocol import codec

from helpers.fake_pod import FakePod, expected_counts
from helpers.wait import wait_until

FAST = PodsConfig(heartbeat_timeout_s=0.6, ping_interval_s=0.1, connect_interval_s=0.1,
                  command_timeout_s=0.15, command_retries=2)
SCENE = {"effect": "breathe", "brightness": 100, "color": [255, 120, 40], "transition_ms": 500,
         "period_ms": 4000, "palette": "warm", "flags": 0, "params": []}


@pytest.fixture
async def pod(tmp_path):
    fake = FakePod(tmp_path / "pod0.tty")
    fake.plug()
    yield fake
    fake.unplug()


@pytest.fixture
async def session(pod):
    transport = SerialTransport(str(pod.link))
    await transport.open()
    s = PodSession(transport, FAST, "test-host")
    task = asyncio.create_task(s.run())
    yield s
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await transport.close()


async def test_handshake_goes_online_with_capabilities(session, pod):
    await wait_until(lambda: session.state.link == "online", what="online")
    first = pod.received[0]
    assert first.name == "connect"
    assert first.fields == {"protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT,
                            "host_id": "test-host"}
    s = session.state
    assert (s.pod_id, s.firmware, s.led_count, s.eeg_channels, s.sample_rate_hz) == ("pod-a", "fake-1.0", 16, 8, 250)
    await wait_until(lambda: s.pod_status.get("mem_free") == 50000, what="pod status")
    assert s.pod_status["effect"] == "solid"
    await wait_until(lambda: s.counters.rtt_ms is not None, what="a pong")


async def test_eeg_batches_are_decoded_and_gaps_counted(session, pod):
    batches = []

    async def collect():
        while not isinstance(ev := await session.events.get(), Ended):
            if isinstance(ev, EegBatch):
                batches.append(ev)

    collector = asyncio.create_task(collect())
    await wait_until(lambda: len(batches) >= 3, what="three batches")
    b = batches[1]
    assert b.n == 5 and b.channels == 8 and b.rate_hz == 250
    counts = codec.eeg_counts(b.fields())  # hostd passes the wire bytes on; sinks decode in bulk
    assert counts[2][3] == expected_counts(b.seq, 2, 3)
    assert counts[0][0] < 0 or b.seq > 3  # negative counts decode signed
    assert session.state.counters.eeg_seq_gaps == 0
    pod.eeg_skip = 7
    await wait_until(lambda: session.state.counters.eeg_seq_gaps == 1, what="a counted gap")
    assert any(x.gap for x in batches[-3:]) or session.state.counters.eeg_seq_gaps == 1
    collector.cancel()


async def test_command_ack_nack_and_resend_with_same_seq(session, pod):
    await wait_until(lambda: session.state.link == "online", what="online")
    assert await session.command("scene", SCENE) == ("ack", None)
    assert session.state.scene == dict(SCENE, source="set", stopped=False, link_safe=False, night=False)
    pod.nack_effects["off"] = "safety"
    assert await session.command("scene", dict(SCENE, effect="off")) == ("nack", "safety")
    pod.drop_commands = 2
    before = len(pod.scenes)
    assert await session.command("scene", SCENE) == ("ack", None)
    resent = pod.scenes[before:]
    assert len(resent) == 3 and len({seq for seq, _ in resent}) == 1
    assert session.state.counters.commands_retried == 2


async def test_command_times_out_after_retries(session, pod):
    await wait_until(lambda: session.state.link == "online", what="online")
    pod.drop_commands = 100
    with pytest.raises(CommandTimeout):
        await session.command("scene", SCENE)
    assert session.state.counters.commands_failed == 1
    assert session.state.counters.commands_sent == 3  # first try + 2 retries


async def test_fingerprint_mismatch_is_refused_with_one_log_line(tmp_path, caplog):
    pod = FakePod(tmp_path / "old.tty", pod_id="pod-old", fingerprint=0xDEADBEEF)
    pod.plug()
    transport = SerialTransport(str(pod.link))
    await transport.open()
    session = PodSession(transport, FAST, "h")
    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(session.run())
        await wait_until(lambda: session.state.link == "refused", what="refused")
        assert "0xdeadbeef" in session.state.reason
        with pytest.raises(NotOnline):
            await session.command("scene", SCENE)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == ["pod pod-old refused: unknown schema fingerprint 0xdeadbeef and no message table in HELLO"
                     f" (port {pod.link})"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await transport.close()
    pod.unplug()


async def test_heartbeat_loss_then_recovery_counts_a_reconnect(session, pod):
    await wait_until(lambda: session.state.link == "online", what="online")
    pod.silent = True
    await wait_until(lambda: session.state.link == "connecting", what="link lost")
    assert session.state.reason == "heartbeat timeout"
    pod.silent = False
    await wait_until(lambda: session.state.link == "online", what="back online")
    assert session.state.counters.reconnects == 1


async def test_reboot_with_new_boot_id_rehandshakes(session, pod):
    await wait_until(lambda: session.state.link == "online", what="online")
    pod.boot_id = 0x9999
    pod.hello()  # a pod volunteers HELLO at boot
    await wait_until(lambda: session.state.counters.reboots == 1, what="reboot counted")
    await wait_until(lambda: session.state.link == "online" and session.state.boot_id == 0x9999, what="online again")


async def test_garbage_is_counted_not_fatal(session, pod):
    await wait_until(lambda: session.state.link == "online", what="online")
    pod.send_raw(b"\x05garbage\x00\x01\x02\x00")
    await wait_until(lambda: sum(session.state.counters.frames_bad.values()) >= 1, what="bad frame counted")
    assert session.state.link == "online"


async def test_unplug_ends_the_session_cleanly(tmp_path):
    pod = FakePod(tmp_path / "p.tty")
    pod.plug()
    transport = SerialTransport(str(pod.link))
    await transport.open()
    session = PodSession(transport, FAST, "h", LocalClaims())
    task = asyncio.create_task(session.run())
    await wait_until(lambda: session.state.link == "online", what="online")
    pod.unplug()
    await asyncio.wait_for(task, 3)  # returns, does not raise
    assert session.state.link == "offline"
    events = []
    while not session.events.empty():
        events.append(session.events.get_nowait())
    assert events[-2:] == [STATE_CHANGED, ENDED]  # the offline state, then the end
    assert all(isinstance(e, StateChanged | EegBatch | Bands) for e in events[:-1])
    await transport.close()


async def test_second_session_with_same_pod_id_is_refused(tmp_path):
    claims = LocalClaims()
    pods = [FakePod(tmp_path / f"d{i}.tty", pod_id="twin") for i in range(2)]
    sessions, tasks = [], []
    for p in pods:
        p.plug()
        t = SerialTransport(str(p.link))
        await t.open()
        s = PodSession(t, FAST, "h", claims)
        sessions.append(s)
        tasks.append(asyncio.create_task(s.run()))
        await wait_until(lambda: s.state.link != "connecting", what="handshake")
    assert sessions[0].state.link == "online"
    assert sessions[1].state.link == "refused"
    assert "already connected on" in sessions[1].state.reason
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s, p in zip(sessions, pods):
        await s.transport.close()
        p.unplug()
