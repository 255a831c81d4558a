"""The raw EEG payload is built by hand for speed (host/eeg_publish.py): it must be the JSON
that json.dumps gives for the same values, for every shape and every 24-bit value."""
import json

import numpy as np
import pytest

from hypnolum.host.eeg_publish import EegPublisher, samples_json
from hypnolum.host.state import SCALE_UV


@pytest.mark.parametrize("n,channels", [(1, 1), (1, 8), (10, 8), (125, 8), (63, 16), (0, 8)])
def test_samples_json_equals_json_dumps(n, channels):
    rng = np.random.default_rng(n * 100 + channels)
    counts = rng.integers(-(2**23), 2**23, size=(n, channels), dtype=np.int32)
    if counts.size:
        edge = np.array([-(2**23), 2**23 - 1, 0, -1, 1, 9, -10], dtype=np.int32)
        counts.ravel()[: min(counts.size, len(edge))] = edge[: counts.size]
    text = samples_json(counts)
    assert text == json.dumps(counts.tolist(), separators=(",", ":"))
    assert json.loads(text) == counts.tolist()


def test_payload_is_the_documented_json():
    pub = EegPublisher(channels=2, rate_hz=250)
    wire = bytes([0x80, 0, 0, 0x7F, 0xFF, 0xFF, 0, 0, 1, 0xFF, 0xFF, 0xFF])  # 2 samples x 2 channels, big-endian
    pub.samples(0, wire, 2, seq=7, ticks_ms=1234, t_host=1700000000.12345)
    pub.gap(2, 5, True, "test")
    pub.samples(7, wire[:6], 1, seq=14, ticks_ms=1262, t_host=1700000000.2)
    first, second = pub.take()
    assert json.loads(first) == {"seq": 7, "n": 2, "channels": 2, "rate_hz": 250, "t_pod_ms": 1234,
                                 "t_host": 1700000000.123, "t_host_last": 1700000000.123, "gap": False, "scale_uv": SCALE_UV,
                                 "samples": [[-8388608, 8388607], [1, -1]]}
    assert json.loads(second)["gap"] is True and json.loads(second)["samples"] == [[-8388608, 8388607]]
    assert first == json.dumps(json.loads(first), separators=(",", ":")).encode()


def test_a_message_of_several_batches_says_when_its_first_and_last_batch_came():
    pub = EegPublisher(channels=2, rate_hz=250)
    wire = bytes(12)  # 2 samples x 2 channels
    pub.samples(0, wire, 2, seq=0, ticks_ms=0, t_host=1700000000.008)
    pub.samples(2, wire, 2, seq=2, ticks_ms=8, t_host=1700000000.016)
    pub.samples(4, wire, 2, seq=4, ticks_ms=16, t_host=1700000000.024)
    (one,) = pub.take()
    msg = json.loads(one)
    assert (msg["n"], msg["t_host"], msg["t_host_last"]) == (6, 1700000000.008, 1700000000.024)


@pytest.mark.parametrize("channels,rate", [(8, 250), (16, 125)])
def test_a_long_run_is_split_into_messages_within_the_payload_limit(channels, rate):
    # 10 s held back during a replay, every value the longest a 24-bit count prints
    pub = EegPublisher(channels=channels, rate_hz=rate, max_bytes=65536)
    n = 10 * rate
    wire = bytes([0x80, 0, 0]) * (n * channels)  # -8388608 everywhere
    pub.gap(0, 3, True, "test")
    pub.samples(3, wire, n, seq=1000, ticks_ms=(1 << 30) - 500, t_host=1700000000.0)
    pub._t_last = 1700000000.0 + (n - 1) / rate
    raw = pub.take()
    assert len(raw) > 1 and all(len(m) <= 65536 for m in raw), [len(m) for m in raw]
    msgs = [json.loads(m) for m in raw]
    seq = 1000
    for i, m in enumerate(msgs):
        assert m["seq"] == seq and m["gap"] is (i == 0)
        assert len(m["samples"]) == m["n"] and m["samples"][0] == [-8388608] * channels
        assert m["t_pod_ms"] == ((1 << 30) - 500 + (seq - 1000) * 1000 // rate) % (1 << 30)
        seq += m["n"]
    assert seq - 1000 == n  # every sample, once, in order
    assert abs(msgs[-1]["t_host_last"] - (1700000000.0 + (n - 1) / rate)) < 0.002


def test_split_messages_stay_within_the_limit():
    pub = EegPublisher(channels=16, rate_hz=125, max_bytes=4096)
    n = 300
    pub.samples(0, bytes([0x80, 0, 0]) * (n * 16), n, seq=0, ticks_ms=0, t_host=1.0)
    out = pub.take()
    assert len(out) > 1 and all(len(m) <= 4096 for m in out), [len(m) for m in out]
    assert sum(json.loads(m)["n"] for m in out) == n
