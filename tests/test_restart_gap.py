"""Restarts of hostd lose no sample silently: hostd is stopped (SIGTERM) while a pod streams and
started again; the two recordings together hold every sample the pod made, or say in a ``gap:``
annotation which ones are missing.

A fake pod on a real pty, a real mosquitto, hostd as a subprocess; recordings read with pyedflib.
"""
from __future__ import annotations

import asyncio
import re
import signal
import stat

import pyedflib
import pytest

from helpers.fake_pod import FakePod, expected_counts
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.timeout(90)

P = "hypnolum/v1/pods"
RATE = 250  # what the fake pod announces (it makes 100 samples a second: batches of 5 every 50 ms)


def start_hostd(tmp_path, port) -> Hostd:
    rec = tmp_path / "rec"
    h = Hostd(tmp_path, port, extra=f'stop_fade_ms = 0\n[recorder]\nenabled = true\ndir = "{rec}"\n'
                                    "[eeg]\npublish_interval_s = 0.1\n")
    h.rec = rec
    h.start()
    return h


def recordings(h: Hostd) -> list:
    return sorted(h.rec.glob("*.bdf"), key=lambda p: p.stat().st_mtime)


def eeg_state(watch) -> dict:
    return (watch.json(f"{P}/pod-a/state") or {}).get("eeg") or {}


async def stop(h: Hostd) -> None:
    h.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(h.proc.wait, 20) == 0
    assert "Traceback" not in h.log_text()


def contents(path) -> tuple[dict[int, int], dict[int, int], list[str]]:
    """What one recording says about the pod's samples: {seq: channel-3 count} of those in it,
    {seq: 1} of those a ``gap:`` annotation declares lost, and its annotation texts.

    ``stream: seq N`` says the sample at that position is pod sample N; from there position and
    sequence advance together, a gap on the time axis being zeros of its length and one off
    the time axis advancing the sequence only. The content ends at ``end of data``."""
    with pyedflib.EdfReader(str(path)) as f:
        data = f.readSignal(3, digital=True).astype(int).tolist()
        onsets, _, texts = f.readAnnotations()
    events = []
    for onset, text in zip(onsets, texts):
        pos = round(onset * RATE)
        if m := re.match(r"stream: seq (\d+)", text):
            events.append((pos, 0, "start", int(m.group(1))))
        elif m := re.match(r"gap: (\d+) samples lost", text):
            events.append((pos, 1, "off" if "not on the time axis" in text else "gap", int(m.group(1))))
        elif text.startswith("end of data"):
            events.append((pos, 2, "end", 0))
    events.sort()
    assert events and events[0][2] == "start" and events[0][0] == 0, texts
    samples: dict[int, int] = {}
    lost: dict[int, int] = {}
    pos, seq, end = 0, events[0][3], len(data)
    for at, _, kind, value in events:
        while pos < min(at, end):
            assert seq not in samples, f"seq {seq} twice"
            samples[seq] = data[pos]
            pos, seq = pos + 1, seq + 1
        if kind == "start":
            seq = value
        elif kind in ("gap", "off"):
            for s in range(seq, seq + value):
                lost[s] = 1
            assert kind == "off" or not any(data[pos:pos + value]), "a gap on the time axis is zeros"
            seq += value
            pos += value if kind == "gap" else 0
        else:
            end = at
    while pos < end:
        samples[seq] = data[pos]
        pos, seq = pos + 1, seq + 1
    return samples, lost, list(texts)


def check_accounted(files, first: int, made: int) -> tuple[int, list[str]]:
    """Every sample first..made-1 is in exactly one file with its value, or in a gap annotation;
    returns how many are in gaps, and the annotations."""
    samples: dict[int, int] = {}
    lost: dict[int, int] = {}
    texts = []
    for path in files:
        s, g, t = contents(path)
        assert not samples.keys() & s.keys(), "a sample in both files"
        samples.update(s)
        lost.update(g)
        texts += t
    missing = [q for q in range(first, made) if q not in samples and q not in lost]
    assert not missing, f"{len(missing)} samples missing without a gap annotation, from seq {missing[0]}"
    assert not samples.keys() & lost.keys()
    wrong = [q for q in samples if q < made and samples[q] != expected_counts(q, 0, 3)]
    assert not wrong and max(samples) == made - 1
    return len(lost), texts


async def restart(tmp_path, port, watch, pod: FakePod, away_s: float, reboot: bool = False) -> Hostd:
    """Record, stop hostd cleanly while the pod streams, start it again ``away_s`` later, let the
    pod stream a little more, stop it, and stop hostd once every sample is in."""
    h = start_hostd(tmp_path, port)
    pod.plug()
    await wait_until(lambda: eeg_state(watch).get("samples", 0) >= 300, timeout=15, what="a record on disk")
    await stop(h)
    if reboot:  # the pod restarts meanwhile: a new boot id, its sequence from 0, its ring empty
        pod.boot_id, pod._sample = 0x5678, 0
        pod.ring.clear()
    await asyncio.sleep(away_s)  # the pod goes on sampling into its ring
    h.start()
    second = (await wait_until(lambda: recordings(h)[1:], timeout=15, what="the second recording"))[0].name

    def now() -> dict:  # the new hostd's state of the pod's stream (not the last one the old hostd left)
        state = eeg_state(watch)
        return state if (state.get("recording") or {}).get("file") == second else {}

    made = pod.samples_made
    await wait_until(lambda: (now().get("next_seq") or 0) > made + 100 and now()["held"] == 0,
                     timeout=15, what="streaming again")
    pod.stop_eeg()
    made = pod.samples_made
    await wait_until(lambda: now().get("next_seq") == made, timeout=10, what="all samples in")
    await stop(h)
    return h


@pytest.fixture
async def watch(mosquitto):
    async with Watcher(mosquitto.port) as w:
        yield w


@pytest.mark.broker
async def test_a_clean_restart_replays_the_pods_ring_and_loses_no_sample(tmp_path, mosquitto, watch):
    pod = FakePod(tmp_path / "pods" / "a.tty", pod_id="pod-a", ring_samples=2000)  # 20 s of the fake's samples
    try:
        h = await restart(tmp_path, mosquitto.port, watch, pod, away_s=1.0)
    finally:
        pod.close()
    files = recordings(h)
    first = int(re.match(r"stream: seq (\d+)", contents(files[0])[2][0]).group(1))
    lost, texts = check_accounted(files, first, pod.samples_made)
    assert lost == 0 and not [t for t in texts if t.startswith(("gap", "discontinuity"))], texts
    state = eeg_state(watch)
    assert state["samples_replayed"] >= 100 and state["samples_lost"] == 0  # the second of absence, replayed
    note = h.rec / ".pod-a.resume.json"
    assert stat.S_IMODE(note.stat().st_mode) == 0o600 and stat.S_IMODE(h.rec.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in h.rec.iterdir())


@pytest.mark.broker
async def test_a_restart_longer_than_the_pods_ring_annotates_the_gap(tmp_path, mosquitto, watch):
    pod = FakePod(tmp_path / "pods" / "a.tty", pod_id="pod-a", ring_samples=50)  # half a second
    try:
        h = await restart(tmp_path, mosquitto.port, watch, pod, away_s=1.5)
    finally:
        pod.close()
    files = recordings(h)
    first = int(re.match(r"stream: seq (\d+)", contents(files[0])[2][0]).group(1))
    lost, _ = check_accounted(files, first, pod.samples_made)
    assert lost >= 100 and lost == eeg_state(watch)["samples_lost"]  # counted and annotated: none silently


@pytest.mark.broker
async def test_a_pod_that_rebooted_while_hostd_was_stopped_is_a_discontinuity(tmp_path, mosquitto, watch):
    pod = FakePod(tmp_path / "pods" / "a.tty", pod_id="pod-a")
    try:
        h = await restart(tmp_path, mosquitto.port, watch, pod, away_s=1.0, reboot=True)
    finally:
        pod.close()
    old, new = recordings(h)
    old_samples, _, _ = contents(old)
    with pyedflib.EdfReader(str(new)) as f:
        texts = list(f.readAnnotations()[2])
    end = max(old_samples) + 1
    assert (f"discontinuity: pod rebooted while hostd was not running (the last recording ended at seq {end} "
            "of boot 00001234)") in texts
    estimated = [t for t in texts if t.startswith("gap: ") and "count estimated from the host clock" in t]
    assert len(estimated) == 1 and int(estimated[0].split()[1]) > RATE  # more than the second away
    state = eeg_state(watch)
    assert state["discontinuities"] == 1 and state["samples_lost"] == int(estimated[0].split()[1])


async def test_a_hole_longer_than_any_replay_is_given_up_at_once():
    """hostd stopped for minutes (same pod boot): the part of the hole no replay can reach is one
    gap, given up without asking; only the newest part is asked for."""
    from hypnolum.host.config import EegConfig
    from hypnolum.host.eeg import ACK, MAX_REPLAY, UNAVAILABLE, EegStream

    gaps: list[tuple[int, int, bool, str]] = []
    asked: list[tuple[int, int]] = []

    class Sink:
        def samples(self, pos, raw, n, seq, ticks_ms, t_host): ...
        def gap(self, pos, lost, padded, reason): gaps.append((pos, lost, padded, reason))
        def annotate(self, pos, text): ...
        def close(self): ...

    stream = EegStream("pod-t", 1, RATE, EegConfig(), [Sink()])
    ring_from = 300_000 - 1000  # what the pod still holds

    async def request(from_seq: int, count: int) -> str:
        asked.append((from_seq, count))
        if from_seq < ring_from:
            return UNAVAILABLE
        for s in range(from_seq, from_seq + count, 50):
            n = min(50, from_seq + count - s)
            asyncio.get_running_loop().call_soon(lambda s=s, n=n: stream.push(s, bytes(3 * n), 0, 0.0, replay=True))
        return ACK

    stream.request = request
    stream.new_boot(1)
    stream.resume_at(10)  # where the last recording ended
    stream.push(300_000, bytes(3 * 5), 0, 0.0)
    await wait_until(lambda: stream.stats.held == 0, timeout=10, what="the hole closed")
    assert gaps[0] == (0, 300_000 - MAX_REPLAY - 10, False, "older than a replay can reach")
    assert all(from_seq >= 300_000 - MAX_REPLAY for from_seq, _ in asked) and len(asked) < 40
    # the rest up to the ring's start (and a twentieth of a second more: the ring's edge moves on)
    assert stream.stats.samples_lost == sum(lost for _, lost, _, _ in gaps) == ring_from - 10 + RATE // 20
    assert stream.stats.samples == 300_005 - 10 - stream.stats.samples_lost
