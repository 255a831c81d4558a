"""EEG signal quality per channel: synthetic signals of each kind through the judge and the
stream sink, and end to end through an emulated pod whose headset has a railed channel, an
electrode off, and a channel powered down, into the pod state hostd publishes."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hypnolum.host.config import EegConfig
from hypnolum.host.eeg import EegStream
from hypnolum.host.signal_quality import FULL_SCALE, SignalQuality, judge
from hypnolum.host.state import SCALE_UV

RATE = 250


def wire(uv: np.ndarray) -> bytes:
    """(n, channels) microvolts as the pod sends them: 24-bit big-endian counts, clipped at the rails."""
    counts = np.clip(np.rint(uv / SCALE_UV), -FULL_SCALE - 1, FULL_SCALE).astype(">i4")
    return counts.view(np.uint8).reshape(-1, 4)[:, 1:].tobytes()


def signals(n: int, seed: int = 1) -> np.ndarray:
    """Five channels: EEG-like (alpha and background, a slow offset drift), railed, flat
    (powered down: zero plus a quarter-microvolt of noise), mains pick-up, EEG with a blink."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    eeg = 20 * np.sin(2 * np.pi * 10 * t) + rng.normal(0, 8, n) + 30000 + 400 * t  # offset and drift
    railed = np.full(n, 1e7)
    flat = rng.normal(0, 0.25, n) - 1200
    mains = 5 + 400 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 8, n)
    blink = 20 * np.sin(2 * np.pi * 10 * t) + rng.normal(0, 8, n) + 150 * np.exp(-((t - 1.0) / 0.1) ** 2)
    return np.stack([eeg, railed, flat, mains, blink], axis=1)


def states(quality: list[dict]) -> list[str]:
    return [q["state"] for q in quality]


def test_each_kind_of_channel_is_judged():
    uv = signals(2 * RATE)
    counts = np.clip(np.rint(uv / SCALE_UV), -FULL_SCALE - 1, FULL_SCALE).astype(np.int32)
    quality = judge(counts)
    assert [q["ch"] for q in quality] == [1, 2, 3, 4, 5]
    assert states(quality) == ["ok", "railed", "flat", "noisy", "ok"]
    assert quality[1]["rms_uv"] is None
    assert 10 < quality[0]["rms_uv"] < 30  # alpha (14 uV rms) and background; offset and drift removed
    assert quality[2]["rms_uv"] < 0.5
    assert 250 < quality[3]["rms_uv"] < 320  # 400 uV peak of mains


def test_rail_at_the_negative_end_and_the_share_of_the_window():
    n = 2 * RATE
    counts = np.zeros((n, 3), dtype=np.int32)
    counts[:, 0] = -FULL_SCALE - 1  # the negative rail
    counts[: n // 3, 1] = FULL_SCALE  # railed for a third of the window only: a big step, not railed
    counts[:, 2] = np.random.default_rng(2).normal(0, 10 / SCALE_UV, n).astype(np.int32)
    assert states(judge(counts)) == ["railed", "noisy", "ok"]


def test_sink_judges_the_newest_two_seconds_and_restarts_after_a_gap():
    q = SignalQuality(5, RATE)
    uv = signals(4 * RATE)
    uv[: 2 * RATE, 2] = 5000 * np.sin(np.arange(2 * RATE))  # channel 3 noisy first, then powered down
    raw = wire(uv)
    row = 3 * 5
    assert q.to_json() == []
    batch = 10
    for i in range(0, 4 * RATE, batch):
        q.samples(i, raw[i * row:(i + batch) * row], batch, i, 0, 0.0)
        if i == RATE // 4:
            assert q.to_json() == []  # not half a second yet
        if i == RATE:
            assert states(q.to_json())[2] == "noisy"
    assert states(q.to_json()) == ["ok", "railed", "flat", "noisy", "ok"]  # the noisy part left the window
    assert len(q._buf) <= 2 * 2 * RATE * row  # bounded
    q.gap(0, 100, True, "pod cannot replay")
    assert q.to_json() == []
    q.samples(0, raw[: RATE * row], RATE, 0, 0, 0.0)
    assert len(q.to_json()) == 5


def test_stream_state_carries_quality_for_every_channel():
    stream = EegStream("pod-q", 5, RATE, EegConfig())
    raw = wire(signals(RATE))
    stream.push(0, raw, 0, time.time())
    quality = stream.to_json()["quality"]
    assert states(quality) == ["ok", "railed", "flat", "noisy", "ok"]
    stream.close()


def test_judging_is_cheap():
    """hostd judges every pod's channels at each state message (up to 4 a second per pod)."""
    q = SignalQuality(16, RATE)
    raw = wire(np.tile(signals(2 * RATE), (1, 4))[:, :16])
    q.samples(0, raw, 2 * RATE, 0, 0, 0.0)
    t0 = time.perf_counter()
    for i in range(200):
        q._received += 1  # new samples each time: no cached answer
        q.to_json()
    per_call = (time.perf_counter() - t0) / 200
    assert per_call < 2e-3, f"{per_call * 1e3:.2f} ms per judgement of 16 channels"


@pytest.mark.broker
@pytest.mark.micropython
async def test_pod_state_shows_quality_from_an_emulated_headset(tmp_path, mosquitto):
    """Headset channel 2 railed, channel 3's electrode off (drift and mains), channel 4 powered
    down on the board: hostd's pod state says so, the other channels are ok."""
    from hypnolum.emulator.runner import Emulator
    from hypnolum.emulator.signals import Participant

    from helpers.hostd import Hostd
    from helpers.mqtt_watch import Watcher
    from helpers.wait import wait_until

    P = "hypnolum/v1/pods/pod-01"
    participant = Participant.from_seed(7, railed=(1,), lead_off=(2,), blinks_per_min=0.0)
    async with Emulator(1, tmp_path / "emu", participant=participant) as emu:
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
        async with Watcher(mosquitto.port) as watch:
            hostd.start()
            try:
                await wait_until(lambda: watch.text(f"{P}/availability") == "online", timeout=20, what="online")
                emu["pod-01"].headset.cyton.channels[3].power_down = True  # the ADC reads 0 on a powered-down input

                def judged():
                    q = ((watch.json(f"{P}/state") or {}).get("eeg") or {}).get("quality") or []
                    return q if len(q) == 8 and q[3]["state"] == "flat" else None

                quality = await wait_until(judged, timeout=20, what="quality with channel 4 flat")
                assert states(quality) == ["ok", "railed", "noisy", "flat", "ok", "ok", "ok", "ok"], quality
                assert [q["ch"] for q in quality] == list(range(1, 9))
                assert quality[1]["rms_uv"] is None and quality[3]["rms_uv"] < 0.5
                assert all(1 < q["rms_uv"] < 100 for q in quality if q["state"] == "ok")
            finally:
                hostd.kill()
        assert "Traceback" not in hostd.log_text(), hostd.log_text()
