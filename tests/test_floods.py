"""Floods of QoS 1 set commands against a real hostd on a real mosquitto (with the shipped queue
limits): every command is answered ``ok``, ``nack`` or ``busy``, none is left without an answer;
under a sustained flood the pod's EEG loses nothing. The figures (10 000 commands, RSS) are
printed by bench/mqtt_burst.py."""
from __future__ import annotations

import pytest

from hypnolum.emulator.runner import Emulator
from hypnolum.host.backpressure import POD_IN_FLIGHT, POD_QUEUE

from helpers.burst import Burst, broker
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

BURST = 2000
MARKERS = 1000
HOST_STATE = "hypnolum/v1/hosts/test-host/state"
POD = "pod-01"


@pytest.fixture
def flood_broker(tmp_path):
    b = broker(tmp_path / "mosquitto")
    yield b
    b.stop()


@pytest.fixture
async def rig(tmp_path, flood_broker):
    """hostd serving one emulated pod (the real firmware under micropython, at its own pace)."""
    async with Emulator(1, tmp_path / "emu") as emu:
        hostd = Hostd(tmp_path, flood_broker.port, pods_dir=tmp_path / "emu", extra="[eeg]\npublish_interval_s = 0.1\n")
        hostd.start()
        try:
            async with Burst(flood_broker.port, POD) as b:
                await wait_until(lambda: (b.state or {}).get("link") == "online", timeout=20, what="pod online")
                await wait_until(lambda: len(b.eeg) >= 3, timeout=10, what="EEG flowing")
                yield hostd, emu[POD], b
        finally:
            hostd.kill()


async def test_every_command_of_a_burst_is_answered_ok_nack_or_busy(rig, flood_broker):
    hostd, pod, b = rig
    ids = await b.burst("burst", BURST)
    assert await b.answered(ids, timeout=40), f"unanswered: {b.count(ids)}"
    counts = b.count(ids)
    assert counts["ok"] + counts["nack"] + counts["busy"] == BURST, counts
    assert counts["ok"] >= 1 and counts["busy"] >= 1, counts  # the pod took what it could, the rest was refused
    assert b.answers == BURST  # one answer each
    busy = next(r for r in b.results.values() if r.get("busy"))
    assert busy["ok"] is False and busy["id"].startswith("burst-") and busy["error"].startswith("busy: ")
    # a burst of markers: every one answered too (the pod is not recorded: each goes on its stream)
    await b.burst_markers(MARKERS)
    await wait_until(lambda: sum(b.markers.values()) >= MARKERS, timeout=30, what="every marker answered")
    assert b.markers == {"ok": MARKERS}, b.markers
    # the busy answers are counted where an operator sees them, and hostd still works
    await wait_until(lambda: (b.state or {}).get("counters", {}).get("host", {}).get("commands_busy") ==
                     counts["busy"], timeout=5, what="busy counted in the pod state")
    async with Watcher(flood_broker.port, ("hypnolum/v1/hosts/#",)) as watch:
        # a state published while the last answers' commands were being let go may still count
        # them in flight: the next one (sent when a command finishes) shows the gate idle
        await wait_until(lambda: (s := watch.json(HOST_STATE) or {}).get("busy_commands") == counts["busy"]
                         and s["commands"]["in_flight"] == 0 and s["commands"]["queued"] == 0,
                         timeout=5, what="busy commands counted and the gate idle in the host state")
    gate = watch.json(HOST_STATE)["commands"]
    assert gate["in_flight"] == 0 and gate["queued"] == 0, gate
    assert gate["peak_in_flight"] <= POD_IN_FLIGHT and gate["peak_queued"] <= POD_QUEUE, gate  # bounded
    assert watch.json(HOST_STATE)["handler_failures"] == {}
    after = await b.burst("after", 1)
    assert await b.answered(after, timeout=10) and b.count(after)["ok"] == 1
    assert hostd.proc.poll() is None
    assert "Traceback" not in hostd.log_text()


@pytest.mark.parametrize("rate", [1000])  # the rate; 4000/s and more: bench/mqtt_burst.py
async def test_a_sustained_flood_keeps_eeg_lossless_and_hostd_bounded(rig, flood_broker, rate):
    hostd, pod, b = rig
    eeg_before = len(b.eeg)
    ids = await b.steady("steady", rate, 3.0)
    assert await b.answered(ids, timeout=30), f"unanswered: {b.count(ids)}"
    counts = b.count(ids)
    assert counts["ok"] + counts["nack"] + counts["busy"] == len(ids), counts
    await wait_until(lambda: len(b.eeg) > eeg_before + 40, timeout=10, what="EEG during and after the flood")
    span, lost = b.eeg_lost()
    assert span >= 750 and lost == 0, (span, lost)
    eeg = b.state["eeg"]
    assert eeg["samples_lost"] == 0 and eeg["gaps_unfilled"] == 0, eeg
    async with Watcher(flood_broker.port, ("hypnolum/v1/hosts/#",)) as watch:
        await wait_until(lambda: (watch.json(HOST_STATE) or {}).get("busy_commands") == counts["busy"],
                         timeout=5, what="the host state after the flood")
    gate = watch.json(HOST_STATE)["commands"]
    assert gate["peak_in_flight"] <= POD_IN_FLIGHT and gate["peak_queued"] <= POD_QUEUE, gate
    assert hostd.proc.poll() is None
