"""Short fuzz runs of both frame decoders and of the pod's handlers (the long ones are bench/fuzz_host.py and
bench/fuzz_firmware.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import fuzz_firmware  # noqa: E402
import fuzz_host  # noqa: E402

from hypnolum.protocol import codec  # noqa: E402
from hypnolum.protocol.messages import COMMANDS  # noqa: E402

from helpers import fuzz_link  # noqa: E402


def test_host_decoder_survives_garbage_and_resyncs():
    s = fuzz_host.run(20_000, seed=7)
    assert s["first_failure"] is None, s["first_failure"]
    assert (s["crashes"], s["hangs"], s["lost_resync"]) == (0, 0, 0)
    assert set(s["kinds"]) == {"raw", "body", "random", "splice"}
    # the mutants reached every stage of the decoder, not just the CRC check
    assert {"cobs", "crc", "oversize", "payload", "unknown_type"} <= set(s["errors_counted"])


@pytest.mark.micropython
def test_firmware_decoder_survives_garbage_and_resyncs_under_micropython():
    s = fuzz_firmware.run(3_000, seed=7, timeout_s=120)
    assert "died" not in s, s.get("died")
    assert s["frames"] == 3_000 and s["crashes"] == 0 and s["lost_resync"] == 0, s
    assert s["value_errors"] > 0 and s["decoder_errors"] > 0  # payload parser and framing both exercised


@pytest.mark.micropython
def test_every_handler_survives_fuzzed_payloads_through_link_under_micropython():
    r = fuzz_link.run(20_000, seed=7, timeout_s=120)
    assert r.crash_count == 0, "\n\n".join(r.crashes)
    assert r.violation_count == 0, r.violations
    assert r.disagreement_count == 0, r.disagreements
    assert r.light == [], r.light
    # the Link's own handlers and every one app.py registers were fuzzed, and the payloads reached
    # them: each handler took some and refused some as bad_message
    handled = {codec.BY_TYPE[t].name for t in r.handlers}
    assert handled == fuzz_link.app_registrations() | {"connect", "ping", "scene", "fade_safe"}, handled
    assert {"scene_at", "frame_phase"} <= handled and COMMANDS <= handled
    for t in r.handlers:
        answers = {a.split(" ", 1)[1] for a in r.answers if a.split(" ", 1)[0] == str(t)}
        assert "nack:1" in answers and answers - {"nack:1"}, (codec.BY_TYPE[t].name, answers)
    assert r.answers["unhandled nack:2"] > 0 and r.replays > 0 and r.frames > 10_000


def test_a_lost_delimiter_costs_at_most_one_frame():
    from hypnolum.protocol import codec

    good = fuzz_host.seeds()[:3]
    dec = codec.FrameDecoder()
    out = dec.feed(b"\x13\x37garbage" + good[0] + good[1])
    assert [f.name for f in out] == [codec.decode(good[1]).name]
    out = dec.feed(b"garbage" + b"\x00" + good[2])
    assert out == [codec.decode(good[2])]
