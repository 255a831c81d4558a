"""The host's side of what pods report: NACK details read for people, LEDS frames checked,
the leds topic rate-limited. (The pod's side: tests/firmware/test_stop.py, test_preview.py,
test_link.py; end to end: tests/test_pod_reports.py.)"""
from __future__ import annotations

import struct
import zlib

import pytest
from cobs import cobs

from hypnolum.host.leds import LedPreview, LedsPublisher, leds_json
from hypnolum.protocol import codec, nack
from hypnolum.protocol.messages import EFFECT_PERIODS, NackDetail


def _frame(type_id: int, payload: bytes, seq: int = 7) -> bytes:
    body = struct.pack("<BBH", codec.PROTOCOL_VERSION, type_id, seq) + payload
    return cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"


def test_an_old_pods_short_nack_still_decodes():
    # a NACK that ends after its reason, as every pod before the detail sends it
    f = codec.decode(_frame(0x31, struct.pack("<HB", 513, 4)))
    assert (f.name, f.fields) == ("nack", {"ack_seq": 513, "reason": "bad_param", "detail": b""})
    assert nack.describe("scene", f.fields) is None
    # and the host still builds one without a detail
    assert codec.encode("nack", 7, {"ack_seq": 513, "reason": "bad_param"}) == _frame(0x31, struct.pack("<HB", 513, 4))


def test_describe_names_the_field_its_item_and_range():
    def fields(field, item, lo, hi):
        return {"ack_seq": 1, "reason": "bad_param",
                "detail": NackDetail.build({"field": field, "item": item, "lo": lo, "hi": hi})}

    lo, hi, _ = EFFECT_PERIODS["heartbeat"]
    assert nack.describe("scene", fields(4, 0xFF, lo, hi)) == {"field": "period_ms", "allowed": [500, 3000]}
    assert nack.describe("scene", fields(7, 1, -5, 700)) == {"field": "params.1", "allowed": [-5, 700]}
    assert nack.describe("scene_at", fields(5, 0xFF, 2000, 65535)) == {"field": "period_ms", "allowed": [2000, 65535]}
    assert nack.describe("scene", fields(5, 0xFF, 0, 2)) == {"field": "palette", "allowed": ["warm", "ember", "ocean"]}
    assert nack.describe("night_mode", fields(0, 0xFF, 0, 2)) == {"field": "mode", "allowed": ["off", "on", "schedule"]}
    assert nack.describe("scene", fields(0xFF, 0xFF, 0, 0)) is None  # names no field
    with pytest.raises(nack.BadDetail, match="field 9 of scene"):
        nack.describe("scene", fields(9, 0xFF, 0, 1))
    with pytest.raises(nack.BadDetail, match="holds one value"):
        nack.describe("scene", fields(4, 2, 0, 1))
    r = nack.Refusal("bad_param", {"field": "period_ms", "allowed": [500, 3000]})
    assert r == "bad_param" and {"bad_param": 1}[r] == 1 and r.detail() == {"field": "period_ms", "allowed": [500, 3000]}
    assert nack.Refusal("busy").detail() == {} and nack.Refusal("busy").field is None


def test_the_codec_refuses_a_detail_or_a_preview_that_does_not_add_up():
    with pytest.raises(codec.ProtocolError, match="detail: 4 bytes"):
        codec.decode(_frame(0x31, struct.pack("<HB", 1, 4) + b"\x01\x02\x03\x04"))
    ok = struct.pack("<HB", 30, 2) + bytes(6)
    assert codec.decode(_frame(0x13, ok)).fields == {"led_count": 30, "segments": 2, "rgb": bytes(6)}
    for bad in (struct.pack("<HB", 30, 2) + bytes(5), struct.pack("<HB", 30, 0), struct.pack("<HB", 300, 33) + bytes(99)):
        with pytest.raises(codec.ProtocolError, match="leds"):
            codec.decode(_frame(0x13, bad))


def test_leds_are_published_at_most_five_times_a_second_per_pod():
    out = []
    now = [100.0]
    pub = LedsPublisher(lambda topic, payload: out.append((topic, payload)), clock=lambda: now[0])
    p = LedPreview(led_count=30, segments=2, rgb=bytes((255, 120, 0, 1, 2, 3)), t_host=1767225600.25)

    def count(pod):
        return [t for t, _ in out].count(f"hypnolum/v1/pods/{pod}/leds")

    for i in range(200):  # 20 a second for 10 s from one pod, 2 a second from another
        pub.publish("pod-a", p)
        if i % 10 == 0:
            pub.publish("pod-b", p)
        now[0] += 0.05
    assert 50 <= count("pod-a") <= 51 and count("pod-b") == 20, (count("pod-a"), count("pod-b"))
    # a pod at its own 5 a second, its previews arriving early or late by 40 ms, loses none
    out.clear()
    for i in range(50):
        now[0] += 0.2 + (0.04 if i % 2 else -0.04)
        pub.publish("pod-c", p)
    assert count("pod-c") == 50
    assert out[0][1] == {"led_count": 30, "segments": 2, "rgb": "ff78000102" + "03", "at": "2026-01-01T00:00:00.250+00:00"}
    with pytest.raises(ValueError, match="3 bytes"):
        leds_json(LedPreview(led_count=1, segments=2, rgb=b"abc", t_host=0.0))
