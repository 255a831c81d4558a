"""hostd's EEG chain end to end: fake pods on real ptys, a real mosquitto, hostd as a
subprocess; recordings opened with MNE (and pyedflib), LSL read with a pylsl inlet."""
from __future__ import annotations

import asyncio
import json
import signal
import stat
import statistics
import time

import aiomqtt
import mne
import numpy as np
import pyedflib
import pytest

from hypnolum.host.state import SCALE_UV

from helpers.fake_pod import FakePod, band_power, expected_counts
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.broker

P = "hypnolum/v1/pods"
RATE = 250


def expected_uv(first: int, n: int, channels: int = 8) -> np.ndarray:
    """(channels, n) microvolts the fake pod sends for samples first..first+n-1."""
    return np.array([[expected_counts(first, i, ch) for i in range(n)] for ch in range(channels)]) * SCALE_UV


def read(path):
    """(raw, microvolts, pod seq of the file's first sample) of one recording."""
    raw = mne.io.read_raw_bdf(path, preload=True, verbose="error")
    starts = [d for d in raw.annotations.description if d.startswith("stream: seq ")]
    first = int(starts[0].split()[2])
    return raw, raw.get_data() * 1e6, first


def hostd_with(tmp_path, port, extra=""):
    rec = tmp_path / "rec"
    h = Hostd(tmp_path, port, extra=f'[recorder]\nenabled = true\ndir = "{rec}"\nparticipant = "P017"\n'
                                    "[eeg]\npublish_interval_s = 0.1\n" + extra)
    h.rec = rec
    h.start()
    return h


@pytest.fixture
async def watch(mosquitto):
    async with Watcher(mosquitto.port) as w:
        yield w


def eeg_state(watch, pod_id="pod-a"):
    return (watch.json(f"{P}/{pod_id}/state") or {}).get("eeg") or {}


def one_file(h):
    files = list(h.rec.glob("*.bdf"))
    assert len(files) == 1, files
    return files[0]


def mqtt_seqs(watch, pod_id="pod-a"):
    seqs, values = [], []
    for msg in watch.all_json(f"{P}/{pod_id}/eeg"):
        seqs.extend(range(msg["seq"], msg["seq"] + msg["n"]))
        values.extend(msg["samples"])
    return seqs, values


async def test_recording_has_every_sample_scale_and_annotations(tmp_path, mosquitto, watch):
    h = hostd_with(tmp_path, mosquitto.port)
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")
    pod.plug()
    try:
        await wait_until(lambda: eeg_state(watch).get("samples", 0) >= 300, timeout=10, what="samples recorded")
        await watch.publish(f"{P}/pod-a/marker", {"text": "lights out"})
        await wait_until(lambda: watch.json(f"{P}/pod-a/marker/result") == {"ok": True}, what="marker accepted")
        await watch.publish(f"{P}/pod-a/marker", {"txt": "typo"})
        await wait_until(lambda: (watch.json(f"{P}/pod-a/marker/result") or {}).get("field") == "text", what="bad marker")
        await watch.publish(f"{P}/pod-a/participant", {"participant": "Jane Doe"})  # a name: refused
        await wait_until(lambda: (watch.json(f"{P}/pod-a/participant/result") or {}).get("field") == "participant",
                         what="name refused")
        await watch.publish(f"{P}/pod-a/participant", {"participant": "P042"})
        await wait_until(lambda: watch.json(f"{P}/pod-a/participant/result") == {"ok": True, "participant": "P042"},
                         what="participant set")
        await watch.publish(f"{P}/pod-a/set", {"id": "s1", "scene": {"effect": "breathe", "brightness": 0.5}})
        await wait_until(lambda: (watch.json(f"{P}/pod-a/set/result") or {}).get("ok"), what="scene acked")
        await asyncio.sleep(0.6)
        pod.stop_eeg()  # what the pod made is what must be in the file
        made = pod.samples_made
        await wait_until(lambda: eeg_state(watch).get("next_seq") == made, timeout=10, what="all samples in")
        h.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(h.proc.wait, 10) == 0
    finally:
        h.kill()
        pod.close()
    path = one_file(h)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(h.rec.stat().st_mode) == 0o700
    raw, uv, first = read(path)
    sent = made - first  # hostd joins the stream with the first batch after the handshake
    assert first < 20 and eeg_state(watch)["samples"] == sent
    assert raw.info["sfreq"] == RATE and raw.ch_names == [f"EEG {i}" for i in range(1, 9)]
    assert raw.info["subject_info"]["his_id"] == "P042"  # set over MQTT, rewritten in the header
    assert raw.n_times == -(-sent // RATE) * RATE  # whole 1 s records, the last one padded
    np.testing.assert_allclose(uv[:, :sent], expected_uv(first, sent), atol=1e-6)
    assert not uv[:, sent:].any()
    notes = dict(zip(raw.annotations.description, raw.annotations.onset))
    assert any(d.startswith("scene: breathe brightness 0.5") for d in notes)
    assert 1.0 < notes["marker: lights out"] < sent / RATE
    assert notes["end of data"] == pytest.approx(sent / RATE)
    # an independent reader agrees, including the exact scale of one count
    with pyedflib.EdfReader(str(path)) as f:
        assert f.getPatientCode() == "P042"
        assert f.getPhysicalMaximum(0) == 187500 and f.getDigitalMaximum(0) == 8388607
        assert f.readSignal(3, digital=True)[:sent].tolist() == [expected_counts(first, i, 3) for i in range(sent)]
    assert "Traceback" not in h.log_text()


async def test_sigkill_leaves_a_readable_file_up_to_the_last_record(tmp_path, mosquitto, watch):
    h = hostd_with(tmp_path, mosquitto.port)
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")
    pod.plug()
    try:
        await wait_until(lambda: eeg_state(watch).get("samples", 0) >= 50, timeout=10, what="streaming")
        await watch.publish(f"{P}/pod-a/marker", {"text": "before the kill"})
        await wait_until(lambda: watch.json(f"{P}/pod-a/marker/result") == {"ok": True}, what="marker accepted")
        await wait_until(lambda: (eeg_state(watch).get("recording") or {}).get("seconds", 0) >= 3, timeout=10,
                         what="three records on disk")
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait()
    finally:
        h.kill()
        pod.close()
    path = one_file(h)
    raw, uv, first = read(path)
    assert raw.n_times >= 3 * RATE and raw.n_times % RATE == 0
    # the header's record count matches the file: no "inferring from the file size"
    header_records = int(path.read_bytes()[236:244])
    assert header_records * RATE == raw.n_times
    np.testing.assert_allclose(uv, expected_uv(first, raw.n_times), atol=1e-6)
    assert "marker: before the kill" in raw.annotations.description


async def test_one_second_unplug_loses_no_sample(tmp_path, mosquitto, watch):
    h = hostd_with(tmp_path, mosquitto.port)
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")
    pod.plug()
    try:
        await wait_until(lambda: eeg_state(watch).get("samples", 0) >= 100, timeout=10, what="streaming")
        pod.unplug(keep_sampling=True)
        await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "offline", what="offline")
        await asyncio.sleep(1.0)
        pod.plug()
        await wait_until(lambda: eeg_state(watch).get("gaps_filled", 0) >= 1, timeout=10, what="hole filled")
        pod.eeg_lose = 3  # and three batches lost on a link that stays up
        await wait_until(lambda: eeg_state(watch).get("gaps_filled", 0) >= 2, timeout=10, what="second hole filled")
        await asyncio.sleep(0.3)
        pod.stop_eeg()
        made = pod.samples_made
        await wait_until(lambda: eeg_state(watch).get("next_seq") == made, timeout=10, what="all samples in")
        state = eeg_state(watch)
        assert state["samples_lost"] == 0 and state["gaps_unfilled"] == 0
        assert state["samples_replayed"] >= 0.8 * RATE * 0.4  # the fake makes 100 samples/s: >= ~1 s replayed
        assert all(answer == "ack" for _, _, answer in pod.replays)
        await asyncio.sleep(0.3)  # the last MQTT message
        h.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(h.proc.wait, 10) == 0
    finally:
        h.kill()
        pod.close()
    raw, uv, first = read(one_file(h))
    seqs, values = mqtt_seqs(watch)
    assert seqs == list(range(first, made))  # every sample once, in order
    assert values[-1] == [expected_counts(made - 1, 0, ch) for ch in range(8)]
    assert state["samples"] == made - first
    np.testing.assert_allclose(uv[:, :made - first], expected_uv(first, made - first), atol=1e-6)
    assert not [d for d in raw.annotations.description if d.startswith("gap")]


async def test_publish_interval_zero_sends_each_batch_as_it_comes(tmp_path, mosquitto, watch):
    """[eeg] publish_interval_s = 0: one message per pod batch, out within a few ms of the batch,
    every sample once, a replayed hole included."""
    h = Hostd(tmp_path, mosquitto.port, extra="[eeg]\npublish_interval_s = 0\n")
    h.start()
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")  # a batch of 5 samples every 50 ms
    received: list[tuple[float, dict]] = []
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(f"{P}/pod-a/eeg")
            pod.plug()
            async with asyncio.timeout(20):
                async for msg in client.messages:
                    received.append((time.time(), json.loads(msg.payload)))
                    if len(received) == 20:
                        pod.eeg_lose = 2  # a hole, filled by a replay
                    if len(received) >= 60:
                        break
            pod.stop_eeg()
            made = pod.samples_made
            await wait_until(lambda: eeg_state(watch).get("next_seq") == made, timeout=10, what="all samples in")
            await asyncio.sleep(0.3)  # the last message
    finally:
        h.kill()
        pod.close()
    assert eeg_state(watch)["gaps_filled"] >= 1
    sizes = [m["n"] for _, m in received]
    assert statistics.median(sizes) == pod.batch, sizes  # one message per batch, not per interval
    delays = [t - m["t_host"] for t, m in received]
    assert statistics.median(delays) < 0.05, delays  # hostd received its first row -> on MQTT
    seqs, _ = mqtt_seqs(watch)
    first = seqs[0]
    assert seqs == list(range(first, made))  # every sample once, in order


async def test_unreplayable_hole_is_a_counted_annotated_gap(tmp_path, mosquitto, watch):
    h = hostd_with(tmp_path, mosquitto.port)
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a", ring_samples=10)  # too small to cover the loss
    pod.plug()
    try:
        await wait_until(lambda: eeg_state(watch).get("samples", 0) >= 100, timeout=10, what="streaming")
        pod.eeg_lose = 6  # 30 samples never sent; the ring keeps only 10
        await wait_until(lambda: eeg_state(watch).get("gaps_unfilled") == 1, timeout=10, what="gap given up")
        await asyncio.sleep(0.3)
        pod.stop_eeg()
        made = pod.samples_made
        await wait_until(lambda: eeg_state(watch).get("next_seq") == made, timeout=10, what="the rest in")
        assert eeg_state(watch)["samples_lost"] == 30
        assert pod.replays and pod.replays[0][1:] == (30, "unavailable")
        await asyncio.sleep(0.3)
        h.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(h.proc.wait, 10) == 0
    finally:
        h.kill()
        pod.close()
    lost_from = pod.replays[0][0]
    raw, uv, first = read(one_file(h))
    seqs, _ = mqtt_seqs(watch)
    assert seqs == [s for s in range(first, made) if not lost_from <= s < lost_from + 30]
    gaps = [m for m in watch.all_json(f"{P}/pod-a/eeg") if m["gap"]]
    assert [m["seq"] for m in gaps] == [lost_from + 30]
    lost_from -= first  # file position
    notes = [(d, o, dur) for d, o, dur in zip(raw.annotations.description, raw.annotations.onset,
                                              raw.annotations.duration) if d.startswith("gap")]
    assert notes == [("gap: 30 samples lost (pod cannot replay)", pytest.approx(lost_from / RATE),
                      pytest.approx(30 / RATE))]
    # the time axis is kept: zeros where the samples are missing, the rest in place
    assert not uv[:, lost_from:lost_from + 30].any()
    end = made - first
    np.testing.assert_allclose(uv[:, lost_from + 30:end], expected_uv(first + lost_from + 30, end - lost_from - 30),
                               atol=1e-6)


async def test_band_powers_on_mqtt_at_4_hz_with_railed_channels(tmp_path, mosquitto, watch):
    h = hostd_with(tmp_path, mosquitto.port)
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a", bands_period_s=0.2)
    pod.railed, pod.near_railed = 0b100, 0b110
    pod.plug()
    try:
        topic = f"{P}/pod-a/bands"
        await wait_until(lambda: len(watch.history[topic]) >= 2, timeout=10, what="bands")
        t0, n0 = time.monotonic(), len(watch.history[topic])
        await asyncio.sleep(2.0)
        rate = (len(watch.history[topic]) - n0) / (time.monotonic() - t0)
        assert rate >= 4.0
        b = watch.json(topic)
        assert b["bands"] == ["delta", "theta", "alpha", "beta", "gamma"] and b["channels"] == 8
        assert b["powers"][7] == [band_power(7, i) for i in range(5)]
        assert (b["railed"], b["near_railed"]) == ([3], [2, 3])
        assert b["window_ms"] == 1000 and b["last_seq"] > 0
        await wait_until(lambda: eeg_state(watch).get("railed") == [3], what="railed in pod state")
    finally:
        h.kill()
        pod.close()


async def test_lsl_outlet_streams_microvolts(tmp_path, mosquitto, watch):
    import pylsl

    h = hostd_with(tmp_path, mosquitto.port, extra='[lsl]\nenabled = true\nname_prefix = "hl-test"\n')
    pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")
    pod.plug()
    try:
        found = await asyncio.to_thread(pylsl.resolve_byprop, "source_id", "hl-test-pod-a", 1, 10.0)
        assert found, "no LSL stream"
        info = found[0]
        assert (info.type(), info.channel_count(), info.nominal_srate()) == ("EEG", 8, RATE)
        inlet = pylsl.StreamInlet(info)
        await asyncio.to_thread(inlet.open_stream, 5.0)
        rows: list = []
        deadline = time.monotonic() + 10
        while len(rows) < 60 and time.monotonic() < deadline:
            chunk, stamps = await asyncio.to_thread(inlet.pull_chunk, 1.0)
            rows.extend(chunk)
        assert len(rows) >= 60
        data = np.array(rows)
        # find where the inlet joined from channel 0 (counts are seq*100 - 400 for channel 0)
        first = int(round((data[0, 0] / SCALE_UV + 400) / 100))
        np.testing.assert_allclose(data.T, expected_uv(first, len(rows)), rtol=1e-6, atol=1e-3)
    finally:
        h.kill()
        pod.close()
