"""Times the pod's hot paths under the 32-bit unix port; run by bench/pod_cpu.py.

argv: channels sample_rate_hz eeg_batch_ms quick(0/1) frames(0/1)
Prints one line per path: "R key us_per_call bytes_allocated_per_call [note]".
The firmware's public classes, wired as firmware/pod/app.py wires them; the
link's port is the firmware's usbcdc.Port over a stand-in machine.USBDevice that
counts the bytes it is given and hands over one prepared frame per OUT transfer.
hal.ticks_* are the C builtins the board's hal.py uses, not the shim's clock model.
"""
import gc
import math
import sys
import time

import hal

# The board's hal.ticks_* are MicroPython's C builtins (firmware/hal.py: ticks_us =
# time.ticks_us, ...); the shim's are Python that model a drifting pod clock
# (emulator/mpy/emutime.py) and cost ~1.5 us a call here. Time the firmware with
# the board's functions (same 2**30 tick period on this 32-bit build).
if time.ticks_add(0, -1) != hal.TICKS_PERIOD - 1:
    raise SystemExit("time.ticks_* period differs from hal.TICKS_PERIOD")
hal.ticks_ms = time.ticks_ms
hal.ticks_us = time.ticks_us
hal.ticks_diff = time.ticks_diff
hal.ticks_add = time.ticks_add

from pod import alpha, bands, config, cyton, derate, effects, framing, ledwire, link, render, ring, status, \
    usbcdc, wire
from pod.mem import copy as _copy
from frametime import best_of, scene, settle  # shared with bench/light_frame.py
from frametime import timed as _timed  # shared with preview_paths.py
from benchusb import BenchPort, StandInUSBDevice  # shared with preview_paths.py

CH = int(sys.argv[1])
RATE = int(sys.argv[2])
BATCH_MS = int(sys.argv[3])
QUICK = sys.argv[4] == "1"
FRAMES_TOO = sys.argv[5] == "1"
N = 300
REPS = 3 if QUICK else 9
K = 1 if QUICK else 10  # iteration multiplier
_HDR = wire.HEADER_SIZE


def report(key, us, alloc=0, note=""):
    print("R %s %.3f %d %s" % (key, us, alloc, note))


def timed(fn, n, reps=REPS):
    return _timed(fn, n, reps)


# -- the pod, wired as app.py wires it -------------------------------------------
cfg = config.Config()
cfg.set("led_count", N)
cfg.set("eeg_channels", CH)
cfg.set("sample_rate_hz", RATE)
cfg.set("eeg_batch_ms", BATCH_MS)
cfg.set("strobe_enabled", True)
leds = hal.Leds(N, "GRB", "ws2812")  # the shim's: the renderer reads its count only here
r = render.Renderer(leds, 60, cfg)
usbd = StandInUSBDevice()
cdc = usbcdc.open(usbd)  # hal.open_link() on the board: the firmware's own CDC code
usbd.open()
lk = link.Link(BenchPort(cdc), ("pod-bench", config.FW_VERSION, 1, N, CH, RATE), r.apply)
r.watch(lk, cfg.fade_after_ms)
lk.register(wire.T_NIGHT_MODE, r.night)
lk.register(wire.T_GROUP_VALUE, r.group, command=False)
lk.register(wire.T_SCENE_AT, r.scene_at)
lk.register(wire.T_FRAME_PHASE, r.frame_phase, command=False)
hs = cyton.Headset(lk, CH, cfg.headset_baud, RATE, cfg.eeg_batch_ms)
hs.ring = samples = ring.SampleRing(CH, RATE)
bp = bands.BandPower(samples, RATE, hs.parser.take_masks, lk, hs.gain)
tracker = hs.parser.tap = alpha.Tracker(CH, RATE, r.inputs, hs.gain)
hb = status.Heartbeat(lk, hs, r)
dr = derate.Derate(r.governor, cfg, lk)
print("I batch_samples %d" % hs.parser.batch_samples)


# -- frames: effect + crossfade + governor + the board's wire encoding -------------
def frames():
    nb = N * 3
    enc = ledwire.encode
    for kind in ("ws2812", "apa102"):
        k, idx, wbuf = ledwire.setup(N, "GRB" if kind == "ws2812" else "BGR", kind)
        print("I wire_bytes_%s %d" % (kind, len(wbuf)))
        if kind == "ws2812":
            # one-wire LEDs go out on SPI: 4 SPI bits per LED bit (firmware/hal.py Leds)
            spi = bytearray(ledwire.spi_onewire_size(len(wbuf)))
            spread = ledwire.spread_onewire
            nw = len(wbuf)

            def frame(t):
                enc(k, wbuf, r.compute(t), nb, idx)
                spread(spi, wbuf, nw)
        else:
            def frame(t):
                enc(k, wbuf, r.compute(t), nb, idx)

        t = hal.ticks_ms()
        nfr = 60 * K
        for eid, spec in sorted(effects.REGISTRY.items()):
            if eid == wire.EFFECT_OFF:
                continue
            scene(r, spec, eid)
            t = settle(frame, t, 100)
            t, us, al = best_of(frame, t, nfr, REPS)
            report("frame_%s_%s" % (kind, spec.name), us / nfr, al // nfr)
        # crossfade: the old effect renders into the second buffer and the two are blended
        for a, b in ((wire.EFFECT_SLOW_WAVE, wire.EFFECT_CANDLE), (wire.EFFECT_AURORA, wire.EFFECT_PALETTE_DRIFT)):
            scene(r, effects.REGISTRY[a], a)
            t = settle(frame, t, 50)
            scene(r, effects.REGISTRY[b], b, 60000)  # a long fade: every timed frame blends
            t = settle(frame, t, 20)
            t, us, al = best_of(frame, t, nfr, REPS)
            report("xfade_%s_%s_%s" % (kind, effects.REGISTRY[a].name, effects.REGISTRY[b].name), us / nfr, al // nfr)


# -- EEG ---------------------------------------------------------------------------
def cyton_stream():
    """256 packets (the 8-bit counter's whole cycle): 10 Hz at ~40 uV + a slower wave, per channel."""
    out_ = bytearray(256 * cyton.PACKET_SIZE)
    per = RATE if CH <= 8 else 2 * RATE  # packets per second
    for c in range(256):
        p = c * cyton.PACKET_SIZE
        out_[p] = 0xA0
        out_[p + 1] = c
        tt = (c if CH <= 8 else c // 2) / (per if CH <= 8 else per / 2)
        for ch in range(8):
            v = int(1800 * math.sin(2 * math.pi * 10 * tt + ch) + 900 * math.sin(2 * math.pi * 1.3 * tt) + 40 * ch)
            v &= 0xFFFFFF
            q = p + 2 + 3 * ch
            out_[q] = v >> 16
            out_[q + 1] = (v >> 8) & 0xFF
            out_[q + 2] = v & 0xFF
        out_[p + 32] = 0xC0
    return out_


def eeg():
    stream = cyton_stream()
    per_read = 2  # packets per UART read: a read at each 10 ms tick finds 2-3 (pod/cyton.py)
    size = per_read * cyton.PACKET_SIZE
    chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
    nch = len(chunks)
    # parser + alpha tap, per packet (the batch handed to a no-op)
    def no_batch(first_seq, ticks_ms, flags, samples_, nbytes):
        pass

    p = cyton.Parser(CH, no_batch, hs.parser.batch_samples)
    p.tap = alpha.Tracker(CH, RATE, None, hs.gain)
    st = [0]

    def feed_one():
        i = st[0]
        p.feed(chunks[i], size, 1000)
        st[0] = (i + 1) % nch

    for i in range(2 * nch):
        feed_one()
    us, al = timed(feed_one, 128 * K)
    report("packet_parse_tap", us / per_read, al // per_read, "parser + alpha tap per packet")
    # alpha tap alone, per sample
    buf = p.batch
    us, al = timed(lambda: tracker(buf, 0), 500 * K)
    report("alpha_tap", us, al)
    # the batch handed over: ring put + EEG_BATCH pack + CRC/COBS + writer.write
    cb = hs.parser.on_batch
    nbytes = hs.parser.batch_samples * CH * 3
    bb = hs.parser.batch
    _copy(bb, 0, p.batch, 0, nbytes)
    seq = [0]
    ns = hs.parser.batch_samples

    def batch_one():
        s = seq[0]
        cb(s, 1000, 0, bb, nbytes)
        seq[0] = s + ns

    b0 = usbd.tx_bytes
    w0 = lk.tx_frames
    us, al = timed(batch_one, 300 * K)
    report("eeg_batch", us, al, "ring put + pack + CRC/COBS + write")
    print("I eeg_batch_wire_bytes %d" % ((usbd.tx_bytes - b0) // (lk.tx_frames - w0)))
    def put_one():
        s = seq[0]
        samples.put(s, 1000, bb, nbytes)
        seq[0] = s + ns

    us, al = timed(put_one, 300 * K)
    report("ring_put_only", us, al, "(part of eeg_batch)")
    # the whole chain as the headset task runs it (cross-check: parse + tap + batch, per packet)
    hp = hs.parser
    st[0] = 0

    def feed_full():
        i = st[0]
        hp.feed(chunks[i], size, 1000)
        st[0] = (i + 1) % nch

    hp.restart()
    for i in range(2 * nch):
        feed_full()
    us, al = timed(feed_full, 128 * K)
    report("headset_chain_check", us / per_read, al // per_read, "cross-check, not summed")
    # band powers: ring full by now; compute every channel + send EEG_BANDS, every 250 ms
    for i in range(samples.capacity // ns + 1):
        batch_one()

    def bands_one():
        bp.compute()
        bp.send()

    us, al = timed(bands_one, 4 * K, REPS)
    report("band_powers", us, al, "%d ch, %d-point FFT" % (CH, bp.n))
    us, al = timed(hb.send, 200 * K)
    report("status", us, al)
    us, al = timed(lambda: dr.update(hal.ticks_ms()), 100 * K)
    report("derate_update", us, al, "emulator sensors stand in for the ADC")


# -- received frames: decode + dispatch (and the answer they cause) ------------------
def frames_of(t, pack, n=64):
    enc = framing.Encoder()
    res = []
    for i in range(n):
        end = pack(enc.body, _HDR, i)
        res.append(bytes(enc.encode(t, 1000 + i, end)))
    return res


def _host_frames(now_us):
    # what a host sends, built with the host's side of the codec (tests/firmware/peer_wire.py),
    # which is not in a pod's heap: it is dropped before anything is timed with these
    import peer_wire

    kinds = (
        ("rx_ping", wire.T_PING, lambda b, o, i: peer_wire.pack_ping(b, o, i, 123456789012 + i)),
        ("rx_group_value", wire.T_GROUP_VALUE, lambda b, o, i: peer_wire.pack_group_value(b, o, 1, (i * 997) & 0xFFFF)),
        ("rx_frame_phase", wire.T_FRAME_PHASE, lambda b, o, i: peer_wire.pack_frame_phase(b, o, now_us + i * 16667, 16667)),
        ("rx_scene_at", wire.T_SCENE_AT, lambda b, o, i: peer_wire.pack_scene_at(
            b, o, now_us + 500000, (wire.EFFECT_AURORA, wire.EFFECT_CANDLE)[i & 1], 200, (255, 160, 80), 1000, 4000,
            wire.PALETTE_AURORA, 0, ())),
    )
    out = [(key, t, frames_of(t, pack)) for key, t, pack in kinds]
    del sys.modules["peer_wire"]
    return out


def rx():
    task = lk.rx_task()  # the link's one task, as the app runs it
    task.send(None)  # started: nothing to read yet, waiting
    built = _host_frames(hal.ticks_us())
    gc.collect()
    for key, t, fr in built:
        nbytes = len(fr[0])
        n = 64 * K

        st = [0]
        resume = task.send
        deliver = usbd.deliver

        def one():
            i = st[0]
            st[0] = i + 1
            deliver(fr[i & 63])  # TinyUSB completes an OUT transfer: the port's callback
            resume(None)  # the link task, woken: read, decode, dispatch, answer, wait again

        us, al = timed(one, n)
        report(key, us, al, "%d B on the wire" % nbytes)
    print("I rx_frames %d rx_errors %d" % (lk.rx_frames, lk.rx_errors))
    # a SCENE_AT taking effect at its frame: the new effect object, the crossfade set up
    # the scenes as unpack_scene_at gives them (made there, timed in rx SCENE_AT above)
    sp = [wire.Scene(eid, 200, (255, 160, 80), 1000, 4000, wire.PALETTE_AURORA) for eid in (wire.EFFECT_AURORA,
                                                                                            wire.EFFECT_CANDLE)]
    st = [0]

    def switch():
        i = st[0]
        st[0] = i + 1
        ms = hal.ticks_ms()
        us = hal.ticks_us()
        r.scene_at(us, sp[i & 1])
        r.due_scene(us, ms)

    us, al = timed(switch, 50 * K)
    report("scene_switch", us, al, "SCENE_AT applied at its frame")


if FRAMES_TOO:
    frames()
eeg()
rx()
gc.collect()
us = 1 << 29
for _ in range(7):  # the fastest of seven, as every path above: a busy host only adds
    t0 = time.ticks_us()
    gc.collect()
    t = time.ticks_diff(time.ticks_us(), t0)
    us = t if t < us else us
print("I gc_collect_us %d mem_free %d mem_alloc %d" % (us, gc.mem_free(), gc.mem_alloc()))
print("I tx_bytes %d tx_xfers %d tx_frames %d tx_dropped %d tx_lost %d tx_free %d" % (
    usbd.tx_bytes, usbd.tx_xfers, lk.tx_frames, lk.tx_dropped, lk.tx_lost, cdc.tx_free()))
