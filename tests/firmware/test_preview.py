# The LED preview under MicroPython: segment means of the governor's output,
# the LEDS frame the link carries, its place at the back of the queue, no allocation.
import gc

import hal
from pod import config, framing, link, preview, render, wire
import peer_wire  # the host's side of the codec (generated)
from test_render import FakeLeds, Port


def test_average_takes_the_rounded_mean_of_each_segment():
    n = 10
    src = bytearray(3 * n)
    for i in range(n):
        src[3 * i] = 10 * i  # R: 0, 10, ..., 90
        src[3 * i + 1] = 255 if i % 2 else 0
        src[3 * i + 2] = 7
    dst = bytearray(20)
    preview.average(src, n, 4, dst, 5)  # segments of 2, 3, 2, 3 LEDs
    want = []
    for lo, hi in ((0, 2), (2, 5), (5, 7), (7, 10)):
        c = hi - lo
        for ch in range(3):
            total = sum(src[3 * i + ch] for i in range(lo, hi))
            want.append((total + c // 2) // c)
    assert list(dst[5:17]) == want, (list(dst[5:17]), want)
    assert dst[:5] == bytes(5) and dst[17:] == bytes(3)  # nothing written outside
    one = bytearray(3)
    preview.average(src, n, 1, one, 0)  # the whole strip
    assert list(one) == [45, 128, 7]
    same = bytearray(3 * n)
    preview.average(src, n, n, same, 0)  # a segment per LED: the frame itself
    assert same == src


class Reader:
    def __init__(self):
        self.got = []
        self.dec = framing.Decoder(self._on)

    def _on(self, type_, seq, frame, end):
        f = peer_wire.UNPACK[type_](frame, wire.HEADER_SIZE, end)
        self.got.append((type_, tuple(bytes(x) if isinstance(x, memoryview) else x for x in f)))

    def read(self, port):
        self.dec.feed(port.out, len(port.out))
        port.out = bytearray()
        got, self.got = self.got, []
        return got


def rig(n):
    leds = FakeLeds(n)
    r = render.Renderer(leds, 60, config.Config())
    port = Port()
    lk = link.Link(port, ("pod-p", "0", 1, n, 8, 250), r.apply)
    return r, lk, port, preview.Preview(lk, r.governor.shown, n)


def test_send_carries_the_governed_strip_in_at_most_32_segments():
    r, lk, port, pv = rig(300)
    assert pv.segments == wire.LED_PREVIEW_MAX_SEGMENTS
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 0, 0), 0, 0))
    t = hal.ticks_ms()
    for i in range(60):  # the governor's slew: the strip is not yet red
        t = hal.ticks_add(t, 17)
        r.render(t)
    shown = bytes(r.governor.shown)
    assert shown != bytes((255, 0, 0)) * 300 and shown[0] > 0
    assert pv.send()
    (kind, (count, k, rgb)), = Reader().read(port)
    assert (kind, count, k, len(rgb)) == (wire.T_LEDS, 300, 32, 96)
    assert rgb == bytes((shown[0], 0, 0)) * 32  # what is driven, not what was asked for
    r2, lk2, port2, pv2 = rig(5)
    assert pv2.segments == 5 and pv2.send()
    assert Reader().read(port2)[0][1] == (5, 5, bytes(15))


def test_the_preview_is_dropped_before_telemetry_when_the_link_is_slow():
    r, lk, port, pv = rig(30)
    port.tx_free = lambda: 2500  # telemetry (EEG) still goes in
    assert not lk.backlogged()
    assert not pv.send() and lk.spare_dropped == 1 and pv.sent == 0
    assert Reader().read(port) == []
    port.tx_free = lambda: 4096
    assert pv.send() and pv.sent == 1


def test_no_allocation_per_preview():
    r, lk, port, pv = rig(300)
    port.write = lambda buf, n: n  # the port takes it; nothing kept
    pv.send()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in range(100):
        pv.send()
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0 and pv.sent == 101, (used, pv.sent)
