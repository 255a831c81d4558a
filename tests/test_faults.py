"""Fault suite: hostd against the emulated firmware survives broker restarts, unplugging, its own
SIGKILL, pod reboots and bit errors on the link, and recovers every time: pods online again,
EEG flowing, commands acknowledged, counters sane.

Every fault also checks the EEG accounting against what the virtual headset really sent: the
recordings (read back with pyedflib) hold the headset's samples in order, sample for sample;
where the pod's ring covered the outage nothing is lost, and every sample that is missing is
counted in the pod state and marked by a ``gap:`` annotation, kept on the time axis as zeros."""
from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import uuid
from dataclasses import dataclass

import numpy as np
import pyedflib
import pytest

from hypnolum.emulator.runner import Emulator
from hypnolum.host.state import SCALE_UV

from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

P = "hypnolum/v1/pods"
PODS = ("pod-01", "pod-02")
FRAME_ERRORS = {"crc", "cobs", "short", "oversize", "version", "unknown_type", "payload", "value"}
RATE = 250
RECORD = 40_000  # headset packets kept for the comparison: 160 s at 250 Hz


def eeg_state(watch: Watcher, pod: str) -> dict:
    return (watch.json(f"{P}/{pod}/state") or {}).get("eeg") or {}


@dataclass
class Segment:
    """A run of one recording that continues one pod sequence: ``first``..``end`` are indices
    into the headset's sent packets, ``lost`` the samples inside it marked as gaps."""
    first: int
    end: int
    lost: int


def sent_counts(pod) -> tuple[np.ndarray, np.ndarray]:
    """(packet counter bytes, ADC counts (n, 8)) of every packet the pod's headset sent."""
    sent = list(pod.headset.cyton.sent)
    assert 0 < len(sent) < RECORD, "the headset record does not cover the test"
    counters = np.array([c for c, _ in sent])
    counts = np.rint(np.array([uv for _, uv in sent]) / SCALE_UV).astype(np.int64)
    return counters, counts


def read_recording(path) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    with pyedflib.EdfReader(str(path)) as f:
        data = np.array([f.readSignal(i, digital=True) for i in range(f.signals_in_file)]).T.astype(np.int64)
        onsets, durations, texts = f.readAnnotations()
    return data, list(zip(onsets, durations, texts))


def check_recording(path, pod) -> tuple[list[Segment], list[tuple[float, float, str]]]:
    """Match a recording sample for sample with what the headset sent.

    Each ``stream: seq N`` annotation starts a segment (the pod's sequence number N is its
    first sample); inside a segment, file position and sequence advance together: every
    sample equals the headset's, except in ``gap:`` annotations, which must be zeros of the
    annotated length. Nothing else may differ, so the file cannot hide a lost or repeated
    sample. The content ends at ``end of data`` (the padding of the last record) or, for a
    file whose writer was killed, at the last whole record."""
    counters, counts = sent_counts(pod)
    data, notes = read_recording(path)
    assert data.shape[1] == 8
    end = len(data)
    starts, gaps = [], []
    for onset, duration, text in notes:
        pos = int(round(onset * RATE))
        if text.startswith("stream: seq "):
            starts.append((pos, int(text.split()[2])))
        elif text.startswith("gap: "):
            assert "not on the time axis" not in text, text
            lost = int(re.match(r"gap: (\d+) samples lost", text).group(1))
            assert duration == pytest.approx(lost / RATE), (text, duration)
            gaps.append((pos, lost))
        elif text == "end of data":
            end = pos
    assert starts and starts[0][0] == 0, notes
    segments = []
    for k, (pos, seq) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else end
        # the headset packet this segment starts with: the same channel values over its first
        # samples, after the previous segment's start (a rebooted pod starts its own sequence
        # afresh and soft-resets the headset, which then sends the same values again)
        w = min(25, stop - pos)
        cand = np.flatnonzero((counts[:len(counts) - w + 1] == data[pos]).all(axis=1))
        cand = [int(i) for i in cand if i > (segments[-1].first if segments else -1)
                and (counts[i:i + w] == data[pos:pos + w]).all()]
        assert cand, f"{path.name}: segment at {pos} (seq {seq}): no matching run of headset packets"
        i0 = cand[0]
        n = stop - pos
        assert i0 + n <= len(counts), "the recording runs past what the headset sent"
        expect = counts[i0:i0 + n].copy()
        lost = 0
        for gpos, glost in gaps:
            if pos <= gpos < stop:
                expect[gpos - pos:gpos - pos + glost] = 0
                lost += glost
        bad = np.flatnonzero((data[pos:stop] != expect).any(axis=1))
        assert not len(bad), f"{path.name}: {len(bad)} samples differ from the headset's, first at position {pos + bad[0]}"
        segments.append(Segment(i0, i0 + n, lost))
    return segments, notes


class Rig:
    def __init__(self, emu, hostd, broker):
        self.emu, self.hostd, self.broker = emu, hostd, broker

    async def recovered(self, watch: Watcher, pods=PODS, timeout: float = 30) -> None:
        """Online, EEG flowing, a command acknowledged and the LEDs showing it, counters sane."""
        for pod in pods:
            await wait_until(lambda: watch.text(f"{P}/{pod}/availability") == "online", timeout=timeout,
                             what=f"{pod} online")
            n = len(watch.history[f"{P}/{pod}/eeg"])
            await wait_until(lambda: len(watch.history[f"{P}/{pod}/eeg"]) >= n + 5, timeout=10, what=f"{pod} EEG")
            color = [random.randrange(1, 60), 0, random.randrange(1, 60)]
            cmd_id = uuid.uuid4().hex[:12]
            await watch.publish(f"{P}/{pod}/set", {"id": cmd_id, "scene": {"effect": "solid", "color": color}})

            def result():
                return next((r for r in watch.all_json(f"{P}/{pod}/set/result") if r["id"] == cmd_id), None)

            res = await wait_until(result, timeout=10, what=f"{pod} command result")
            assert res["ok"], res
            await self.emu[pod].leds.wait_for(lambda f: f.pixels() and all(g == 0 and r > 0 and b > 0 for r, g, b in f.pixels()),
                                              timeout=5)
            state = await wait_until(lambda: (s := watch.json(f"{P}/{pod}/state")) and s["scene"] and s["scene"]["color"] == color
                                     and s, what=f"{pod} state with the new scene")
            assert state["link"] == "online"
            host = state["counters"]["host"]
            assert set(host["frames_bad"]) <= FRAME_ERRORS
            assert all(v >= 0 for v in host.values() if isinstance(v, int))
            assert host["eeg_samples"] > 0 and host["frames_rx"] > host["eeg_batches"]
        assert "Traceback" not in self.hostd.log_text(), self.hostd.log_text()[-3000:]

    async def settled(self, watch: Watcher, pods=PODS) -> dict[str, dict]:
        """Wait until no sample is held back and none is being replayed; the pods' EEG states."""
        for pod in pods:
            # nothing held back means no hole open and no replay outstanding
            await wait_until(lambda: (e := eeg_state(watch, pod)) and e["held"] == 0 and e["samples"] > 0,
                             timeout=10, what=f"{pod} EEG settled")
        return {pod: eeg_state(watch, pod) for pod in pods}

    async def stop_hostd(self, watch: Watcher) -> dict[str, dict]:
        """Stop the headsets, let the last samples in, SIGTERM hostd (the recordings are closed);
        the pods' last EEG states."""
        for pod in PODS:
            self.emu[pod].headset.cyton.receive(b"s")  # as if the pod had sent the Cyton its stop command
        marks = {pod: len(watch.history[f"{P}/{pod}/state"]) for pod in PODS}

        def still():  # two states published after the stop with the same sample count
            for pod in PODS:
                after = [json.loads(m)["eeg"]["samples"] for m in watch.history[f"{P}/{pod}/state"][marks[pod]:]]
                if len(after) < 2 or after[-1] != after[-2]:
                    return False
            return True

        await wait_until(still, timeout=10, what="the last samples in")
        states = await self.settled(watch)
        self.hostd.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(self.hostd.proc.wait, 10) == 0
        assert "Traceback" not in self.hostd.log_text(), self.hostd.log_text()[-3000:]
        return states

    def recordings(self, pod: str) -> list:
        return sorted(self.rec.glob(f"{pod}_*.bdf"), key=lambda p: p.stat().st_mtime)

    def one_recording(self, pod: str) -> tuple[list[Segment], list]:
        files = self.recordings(pod)
        assert len(files) == 1, files
        return check_recording(files[0], self.emu[pod])

    def lossless(self, pod: str, state: dict) -> Segment:
        """One recording, one stream, every sample the headset sent over its span, nothing lost."""
        (seg,), notes = self.one_recording(pod)
        assert not [t for _, _, t in notes if t.startswith("discontinuity")], notes
        # only packets the headset could not deliver to the pod (a loaded machine) may be missing:
        # the pod never had them, so no ring could cover them
        dropped = self.emu[pod].headset.stats.packets_dropped
        assert seg.lost == state["samples_lost"] <= dropped, (state, seg, dropped, notes)
        assert state["samples"] + seg.lost == seg.end - seg.first, (state, seg)  # every sample handed on is in the file
        return seg


@pytest.fixture
async def rig(tmp_path, mosquitto):
    async with Emulator(2, tmp_path / "emu", seed=11, led_count=12, headset_record=RECORD) as emu:
        await emu.wait_links(20)
        rec = tmp_path / "rec"
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu",
                      extra=f'[recorder]\nenabled = true\ndir = "{rec}"\n[eeg]\npublish_interval_s = 0.1\n')
        hostd.start()
        try:
            r = Rig(emu, hostd, mosquitto)
            r.rec = rec
            yield r
        finally:
            hostd.kill()


async def test_broker_restart(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
    rig.broker.stop()
    await asyncio.sleep(1.5)  # hostd is cut off for a while, retrying with backoff
    rig.broker.start()  # same port, empty (no persistence): hostd must republish everything
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        assert watch.text("hypnolum/v1/hosts/test-host/availability") == "online"
        states = await rig.stop_hostd(watch)
    assert "retrying" in rig.hostd.log_text()
    for pod in PODS:  # the broker is not on the EEG path: the recordings never noticed
        rig.lossless(pod, states[pod])


async def test_pod_unplug_and_replug(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        pod = rig.emu["pod-01"]
        pod.unplug()
        await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "offline", timeout=10, what="offline")
        n = len(watch.history[f"{P}/pod-02/eeg"])
        await asyncio.sleep(1.0)
        assert len(watch.history[f"{P}/pod-02/eeg"]) > n  # the other pod never noticed
        pod.replug()
        await rig.recovered(watch)
        states = await rig.stop_hostd(watch)
    # the pod's ring (4 s) covered the unplug: replayed, nothing lost
    assert states["pod-01"]["gaps_filled"] >= 1 and states["pod-01"]["samples_replayed"] >= RATE, states["pod-01"]
    for pod in PODS:
        rig.lossless(pod, states[pod])


async def test_long_unplug_loses_only_what_the_ring_could_not_hold(rig):
    async with Watcher(rig.broker.port) as watch:
        await wait_until(lambda: eeg_state(watch, "pod-01").get("samples", 0) > RATE, timeout=20, what="streaming")
        rig.emu["pod-01"].unplug()
        await asyncio.sleep(6.0)  # longer than the pod's ring (about 4 s)
        rig.emu["pod-01"].replug()
        await rig.recovered(watch, pods=("pod-01",))
        states = await rig.stop_hostd(watch)
    state = states["pod-01"]
    (seg,), notes = rig.one_recording("pod-01")  # one sequence, the gap kept on the time axis
    gaps = [t for _, _, t in notes if t.startswith("gap")]
    assert all(t.endswith(" samples lost (pod cannot replay)") for t in gaps), gaps
    assert seg.lost == state["samples_lost"] and state["gaps_unfilled"] == len(gaps) >= 1
    # the newest part of the outage came back from the ring, only the oldest part is lost
    assert state["samples_replayed"] >= 3 * RATE and RATE < state["samples_lost"] < 4 * RATE, state
    assert state["samples"] + seg.lost == seg.end - seg.first
    rig.lossless("pod-02", states["pod-02"])


async def test_hostd_sigkill_and_restart_with_a_command_queued_meanwhile(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        rig.hostd.kill()
        for pod in PODS:
            await wait_until(lambda: watch.text(f"{P}/{pod}/availability") == "offline", timeout=10, what="will")
        # the broker holds hostd's persistent session: a QoS 1 command sent now is delivered after the restart
        await watch.publish(f"{P}/pod-02/set", {"id": "while-dead", "scene": {"effect": "solid", "color": [0, 99, 0]}})
        rig.hostd.start()
        await wait_until(lambda: any(r["id"] == "while-dead" for r in watch.all_json(f"{P}/pod-02/set/result")),
                         timeout=20, what="the queued command carried out")
        assert next(r for r in watch.all_json(f"{P}/pod-02/set/result") if r["id"] == "while-dead")["ok"]
        await rig.emu["pod-02"].leds.wait_for(lambda f: f.pixels() and all(g > 0 and r == 0 for r, g, b in f.pixels()),
                                              timeout=5)
        await rig.recovered(watch)
        states = await rig.stop_hostd(watch)
    for pod in PODS:
        # the killed hostd's file is valid up to its last whole record; the new hostd's file
        # goes on from there: what the ring still held is replayed, the rest counted and marked
        first, second = rig.recordings(pod)
        (before,), _ = check_recording(first, rig.emu[pod])
        (after,), notes = check_recording(second, rig.emu[pod])
        assert before.lost == 0
        assert after.first == before.end, (pod, before, after)  # no sample missing between the files
        assert after.lost == states[pod]["samples_lost"], (after, states[pod])
        assert len([t for _, _, t in notes if t.startswith("gap")]) == states[pod]["gaps_unfilled"]
        assert states[pod]["samples"] + after.lost == after.end - after.first


async def test_pod_reboot(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        boots = rig.emu["pod-01"].counters.boots
        await rig.emu["pod-01"].reboot()
        assert rig.emu["pod-01"].counters.boots == boots + 1
        await wait_until(lambda: watch.json(f"{P}/pod-01/state")["counters"]["host"]["reboots"] >= 1, timeout=20,
                         what="reboot seen by hostd")
        assert watch.json(f"{P}/pod-01/state")["scene"] is None  # the rebooted pod no longer shows the old scene
        await rig.recovered(watch)
        assert watch.json(f"{P}/pod-02/state")["counters"]["host"]["reboots"] == 0
        states = await rig.stop_hostd(watch)
    rig.lossless("pod-02", states["pod-02"])
    # the ring went with the reboot: what the headset sent meanwhile is lost, counted and marked
    (old, new), notes = rig.one_recording("pod-01")
    truly_lost = new.first - old.end + old.lost  # headset packets between the two boots' samples
    state = states["pod-01"]
    assert state["discontinuities"] == 1 and any(t.startswith("discontinuity: pod rebooted") for _, _, t in notes)
    assert truly_lost > 0 and state["samples_lost"] == old.lost + new.lost
    # the count is hostd's estimate from its clock (the pod's sequence restarted): within 0.1 s
    assert abs(state["samples_lost"] - truly_lost) <= RATE // 10, (state, old, new)


class BitErrors:
    """Flip each bit with probability ``ber`` (independently), counting the flips."""

    def __init__(self, ber: float, seed: int):
        self.ber = ber
        self.rng = random.Random(seed)
        self.bits = 0
        self.flips = 0
        self._next = self.rng.expovariate(ber)  # bits until the next error

    def __call__(self, data: bytes) -> bytes:
        out = None
        n_bits = len(data) * 8
        while self._next < n_bits:
            pos = int(self._next)
            out = out or bytearray(data)
            out[pos // 8] ^= 1 << (pos % 8)
            self.flips += 1
            self._next += 1 + self.rng.expovariate(self.ber)
        self._next -= n_bits
        self.bits += n_bits
        return bytes(out) if out is not None else data


async def test_bit_errors_at_1e_4(rig):
    async with Watcher(rig.broker.port) as watch:
        await rig.recovered(watch)
        filters = []
        for i, pod in enumerate(PODS):
            up, down = BitErrors(1e-4, seed=i), BitErrors(1e-4, seed=100 + i)
            rig.emu[pod].to_host_filter, rig.emu[pod].to_pod_filter = up, down
            filters += [up, down]
        # under errors: still online, EEG flowing, commands acknowledged (re-sent when a frame is hit)
        await asyncio.sleep(2.5)
        await rig.recovered(watch)
        assert sum(f.flips for f in filters) >= 10, [(f.bits, f.flips) for f in filters]
        bad = {pod: watch.json(f"{P}/{pod}/state")["counters"]["host"]["frames_bad"] for pod in PODS}
        assert any(sum(b.values()) for b in bad.values()), bad  # the damage was seen and counted
        for pod in PODS:
            rig.emu[pod].to_host_filter = rig.emu[pod].to_pod_filter = None
        await rig.recovered(watch)
        states = await rig.stop_hostd(watch)
    # EEG frames hit on the wire were replayed from the ring: nothing lost, nothing corrupted
    assert sum(states[pod]["samples_replayed"] for pod in PODS) > 0, states
    for pod in PODS:
        rig.lossless(pod, states[pod])
