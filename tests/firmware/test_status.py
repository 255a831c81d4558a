# The heartbeat's STATUS frame on a 32-bit port: uptime past 2**30 ms (12.4 days) and
# counters keep the wire's u32 meaning without a heap int per frame.
import gc
import struct

import hal
from pod import status, wire
import peer_wire  # the host's side of the codec (generated)


class _Link:
    rx_frames = 5
    rx_errors = 1
    tx_frames = 7

    def __init__(self):
        self.body = bytearray(1024)
        self.sent = None
        self.end = 0

    def send_telemetry(self, type_, end):
        self.end = end


class _Eeg:
    samples = (1 << 30) - 1
    gaps = 2
    dropped = 3


class _Leds:
    late_starts = 4


class _R:
    frames_rendered = 1000
    render_overruns = 1
    late_frames = 2
    leds = _Leds()
    scene = wire.Scene(wire.EFFECT_SOLID, 200)


def test_uptime_crosses_2_30_and_2_32_ms_and_a_heartbeat_allocates_nothing():
    lk = _Link()
    hb = status.Heartbeat(lk, _Eeg(), _R())
    M30 = (1 << 30) - 1
    for hi, want in ((0, 1 << 30), (3, 0)):
        hb.uptime_ms = M30 - 100
        hb.uptime_hi = hi
        hb._last_ms = hal.ticks_add(hal.ticks_ms(), -1000)  # a second since the last one
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        hb.send()
        used = gc.mem_alloc() - before
        gc.enable()
        assert used == 0, used
        lk.sent = bytes(lk.body[4:lk.end])
        up = struct.unpack_from("<I", lk.sent, 0)[0]
        assert want + 890 <= up <= want + 1100, (hi, up)
        f = peer_wire.unpack_status(lk.sent, 0, len(lk.sent))
        assert f[5] == M30 and f[11] == wire.EFFECT_SOLID
        assert f[9] == 1 + 2 + 4  # skipped, handed over late, started late
