"""The virtual Cyton's command set, as the OpenBCI Cyton SDK documents it."""
from __future__ import annotations

import numpy as np
import pytest

from hypnolum.emulator.cyton_protocol import (
    BANNER,
    BANNER_DAISY,
    PACKET_SIZE,
    TIMEOUT_REPLY,
    Cyton,
    uv_per_count,
)
from hypnolum.emulator.headset import parse_packets
from hypnolum.emulator.signals import LABELS, Participant, SignalSource


class Clock:
    def __init__(self):
        self.t = 50.0

    def __call__(self):
        return self.t


def stream(c: Cyton, clock: Clock, seconds: float) -> np.ndarray:
    c.receive(b"b")
    clock.t += seconds
    data = c.packets_until(clock.t)
    c.receive(b"s")
    return parse_packets(data)


def test_replies_while_idle_none_while_streaming():
    c = Cyton(0, Clock())
    assert c.receive(b"v") == BANNER
    assert c.receive(b"x1030110X") == b"Success: Channel set for 1$$$"
    assert c.receive(b"z410Z") == b"Success: Lead off set for 4$$$"
    assert c.receive(b"D") == b"060110$$$"
    assert c.receive(b"~~") == b"Sample rate is 250Hz$$$"
    assert c.receive(b"//") == b"Board mode is default$$$"
    assert c.receive(b"/2") == b"Board mode set to analog$$$"
    assert c.receive(b"<") == b"Time stamp ON$$$"
    assert c.receive(b">") == b"Time stamp OFF$$$"
    assert c.receive(b"V") == b"v3.1.2$$$"
    assert c.receive(b"0") == b"Success: Configured internal test signal.$$$"
    c.receive(b"b")
    assert c.receive(b"x2060110X") == b""  # streaming: no confirmation
    assert c.channels[1].gain == 24
    assert c.receive(b"v") == BANNER  # the soft reset stops the stream and answers
    assert not c.streaming


def test_malformed_multibyte_commands_fail_with_the_sdk_messages():
    clock = Clock()
    c = Cyton(0, clock)
    assert c.receive(b"x102000X") == b"Failure: too few chars$$$"
    assert c.receive(b"x1020000V") == b"Failure: 9th char not X$$$"
    assert c.receive(b"z41Z") == b"Failure: too few chars$$$"
    assert c.receive(b"z410V") == b"Failure: 5th char not Z$$$"
    assert c.receive(b"x10") == b""
    clock.t += 1.5
    assert c.receive(b"0") == TIMEOUT_REPLY + b"Success: Configured internal test signal.$$$"
    assert c.stats.failures == 5


def test_channel_off_on_and_gain_change_the_counts_not_the_microvolts():
    clock = Clock()
    p = Participant.from_seed(3, script=(("wake", 60.0),))
    a, b = Cyton(3, clock, participant=p), Cyton(3, clock, participant=p)
    a.receive(b"2")  # channel 2 off
    b.receive(b"x1030110X")  # channel 1 at gain 6
    pa, pb = stream(a, clock, 2.0), stream(b, clock, 2.0)
    assert (pa["counts"][:, 1] == 0).all() and (pa["counts"][:, 0] != 0).any()
    ua = pa["counts"][:, 0] * uv_per_count(24)
    ub = pb["counts"][:, 0] * uv_per_count(6)
    assert np.abs(ua - ub).max() <= uv_per_count(6)  # same µV, 4x coarser counts
    a.receive(b"@")  # channel 2 on again
    assert (stream(a, clock, 1.0)["counts"][:, 1] != 0).any()


def test_defaults_restore_every_channel():
    c = Cyton(0, Clock())
    c.receive(b"x1111000X3")
    assert (c.channels[0].power_down, c.channels[0].gain, c.channels[2].power_down) == (True, 2, True)
    assert c.receive(b"d") == b"updating channel settings to default$$$"
    assert all(ch.gain == 24 and not ch.power_down for ch in c.channels)


def test_register_dump_reflects_the_settings():
    c = Cyton(0, Clock())
    c.receive(b"x3020000X~5")
    dump = c.receive(b"?").decode()
    assert dump.startswith("Board ADS Registers\n") and dump.endswith("$$$")
    assert "ADS_ID, 00, 3E" in dump
    assert "CONFIG1, 01, 95" in dump  # 500 Hz
    assert "CH3SET, 07, 20" in dump  # gain 2, no SRB2, normal input
    assert "CH1SET, 05, 68" in dump  # default: gain 24, SRB2


def test_sample_rate_sets_the_pace():
    clock = Clock()
    c = Cyton(0, clock)
    assert c.receive(b"~5") == b"Sample rate set to 500Hz$$$"
    assert len(stream(c, clock, 1.0)) == 501
    assert c.receive(b"~9") == b"Failure: sample value out of bounds$$$"


def test_daisy_interleaves_board_and_daisy_packets_at_half_rate():
    clock = Clock()
    assert Cyton(0, clock).receive(b"C") == b"no daisy to attach!8$$$"
    c = Cyton(5, clock, daisy=True, record=1000)
    assert c.receive(b"v") == BANNER_DAISY
    assert c.receive(b"C") == b"16$$$"
    assert c.receive(b"c") == b"daisy removed$$$"
    assert c.receive(b"C") == b"daisy attached16$$$"
    c.receive(b"x")
    c.receive(b"Q030110X")  # channel 9 (Daisy's first) at gain 6
    assert c.channels[8].gain == 6
    pk = stream(c, clock, 2.0)
    assert len(pk) == 501  # still 250 packets per second: 125 Hz per channel
    sent = np.array([u for _, u in c.sent])
    odd = pk["counter"] % 2 == 1
    # odd packets: channels 1-8 at gain 24; even: channels 9-16, channel 9 at gain 6
    assert np.allclose(pk["counts"][odd][:, 0] * uv_per_count(24), sent[odd][:, 0])
    assert np.allclose(pk["counts"][~odd][:, 0] * uv_per_count(6), sent[~odd][:, 0])


def test_footer_follows_board_mode_and_time_stamping():
    clock = Clock()
    c = Cyton(0, clock)
    assert set(stream(c, clock, 0.1)["footer"]) == {0xC0}
    c.receive(b"/4")  # marker mode: raw aux
    pk = stream(c, clock, 0.1)
    assert set(pk["footer"]) == {0xC1}
    c.receive(b"/0<")
    c.receive(b"b")
    clock.t += 0.2
    data = np.frombuffer(c.packets_until(clock.t), np.uint8).reshape(-1, PACKET_SIZE)
    assert data[0, 32] == 0xC3 and (data[1:, 32] == 0xC4).all()
    ms = data[:, 28:32].copy().view(">u4").ravel()
    assert (np.diff(ms.astype(int)) >= 0).all()
    assert set(data[:6, 26]) == set(b"XxYyZz")  # accelerometer interleaved a byte per packet
    c.receive(b"s/2")
    c.receive(b"b")
    clock.t += 0.1
    data = np.frombuffer(c.packets_until(clock.t), np.uint8).reshape(-1, PACKET_SIZE)
    assert (data[:, 32] == 0xC6).all()


def test_marker_lands_in_the_first_aux_byte():
    clock = Clock()
    c = Cyton(0, clock)
    c.receive(b"/4b")
    clock.t += 0.1
    c.packets_until(clock.t)
    c.receive(b"`K")
    clock.t += 0.1
    data = np.frombuffer(c.packets_until(clock.t), np.uint8).reshape(-1, PACKET_SIZE)
    assert data[0, 26] == ord("K") and (data[1:, 26] == 0).all()


def test_impedance_test_current_shows_the_electrode_impedance():
    clock = Clock()
    p = Participant.from_seed(2, script=(("wake", 60.0),), lead_off=(5,))
    c = Cyton(2, clock, participant=p)
    c.receive(b"z110Zz610Z")
    uv = stream(c, clock, 4.0)["counts"] * uv_per_count(24)
    f = np.fft.rfftfreq(len(uv), 1 / 250)
    amp = 2 * np.abs(np.fft.rfft(uv, axis=0)) / len(uv)
    k = np.argmin(np.abs(f - 31.2))
    # the OpenBCI GUI's formula: Z = (peak µV / 6 nA) - 2.2 kΩ
    z1 = amp[k - 1 : k + 2, 0].max() * 1e-6 / 6e-9 - 2200
    assert abs(z1 / 1e3 - p.impedance_kohm[0]) < 0.2 * p.impedance_kohm[0] + 1
    assert amp[k - 1 : k + 2, 5].max() * 1e-6 / 6e-9 > 1e6  # the lead-off electrode: megohms


def test_railed_and_lead_off_channels():
    clock = Clock()
    p = Participant.from_seed(4, railed=(2,), lead_off=(6,))
    c = Cyton(4, clock, participant=p)
    counts = stream(c, clock, 20.0)["counts"]
    assert (counts[:, 2] == 2**23 - 1).all()
    assert np.abs(counts[:, 6]).max() * uv_per_count(24) > 10000  # tens of mV of drift


def test_sleep_script_brings_spindles_and_kcomplexes_in_n2_only():
    p = Participant.from_seed(9, script=(("wake", 30.0), ("N2", 120.0), ("REM", 30.0)), loop_script=False,
                              spindles_per_min=12, kcomplexes_per_min=4)
    src = SignalSource(p, 250)
    src.take(250 * 180)
    kinds = {}
    for sample, kind, _ch in src.events:
        kinds.setdefault(kind, []).append(sample / 250)
    assert all(30 <= t < 150 for t in kinds["spindle"]) and len(kinds["spindle"]) >= 8
    assert all(30 <= t < 150 for t in kinds["kcomplex"]) and len(kinds["kcomplex"]) >= 1
    assert all(t < 30 for t in kinds["blink"])
    assert all(t >= 150 for t in kinds["rem"])
    assert [p.stage_at(t) for t in (0, 45, 160)] == ["wake", "N2", "REM"]


def test_participants_differ_and_pops_land_on_one_channel():
    a, b = Participant.from_seed(1), Participant.from_seed(2)
    assert a.alpha_hz != b.alpha_hz and a.impedance_kohm != b.impedance_kohm
    src = SignalSource(Participant.from_seed(1, pops_per_min=30.0), 250)
    uv = src.take(250 * 20)
    pops = [(s, ch) for s, kind, ch in src.events if kind == "pop"]
    assert pops
    s, ch = pops[0]
    assert uv[s + 2, ch] - uv[s - 2, ch] > 200
    assert len(LABELS) == 16


def test_bad_participants_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="unknown stage 'N5'"):
        Participant(script=(("N5", 10.0),))
    with pytest.raises(ValueError, match="channel index 16"):
        Participant(railed=(16,))
