# A participant's stop (FADE_SAFE) and the pod's own scene report (SCENE_SHOWN),
# through the real link, renderer and governor: the glow within 2 s from any
# colour, held against the timeline, the rise after it slowed by the fade's debt;
# what the pod reports it shows, and when.
import gc

import hal
from pod import config, framing, governor, link, render, wire
import peer_wire  # the host's side of the codec (generated)
from test_render import FakeLeds, Port, run_for

GLOW = bytes(render.SAFE_COLOR[i] * 28 // 255 for i in range(3))


def make(n=4, leds=None, **cfg_keys):
    cfg = config.Config()
    for k, v in cfg_keys.items():
        assert cfg.set(k, v), k
    leds = leds or FakeLeds(n)
    r = render.Renderer(leds, 60, cfg)
    lk = link.Link(Port(), ("pod-s", "0", 1, n, 8, 250), r.apply)
    r.watch(lk, cfg.fade_after_ms)
    lk.register(wire.T_SCENE_AT, r.scene_at)
    lk.register(wire.T_NIGHT_MODE, r.night)
    return leds, r, lk


class Host:
    def __init__(self):
        self.enc = framing.Encoder()
        self.got = []
        self.dec = framing.Decoder(self._on)
        self.seq = 100

    def _on(self, type_, seq, frame, end):
        self.got.append((type_, peer_wire.UNPACK[type_](frame, wire.HEADER_SIZE, end)))

    def send(self, lk, type_, *fields):
        self.seq += 1
        end = peer_wire.PACK[type_](self.enc.body, wire.HEADER_SIZE, *fields)
        data = self.enc.encode(type_, self.seq, end)
        lk._dec.feed(data, len(data))

    def read(self, lk, type_=None):
        port = lk._port
        self.dec.feed(port.out, len(port.out))
        port.out = bytearray()
        got, self.got = self.got, []
        return [g for g in got if type_ is None or g[0] == type_]


def near(frame, want, n, tol=1):
    return all(abs(frame[3 * i + c] - want[c]) <= tol for i in range(n) for c in range(3))


def talking(r, lk, t, ms):
    """Render for ms while the host keeps talking (no fade to safe); the pod time reached."""
    end = hal.ticks_add(t, ms)
    while hal.ticks_diff(end, t) > 0:
        t = hal.ticks_add(t, 17)
        lk.last_rx_ms = t
        r.render(t)
    return t


def lit_then_stop(color, n=4):
    leds, r, lk = make(n)
    host = Host()
    host.send(lk, wire.T_SCENE, wire.EFFECT_SOLID, 255, color, 0, 0, 0, 0, ())
    t = talking(r, lk, hal.ticks_ms(), 12000)
    assert leds.last == bytes(color) * n, leds.last
    host.read(lk)
    host.send(lk, wire.T_FADE_SAFE)
    return leds, r, lk, host, t


def frames_until_glow(r, leds, t, n, limit_ms=3000):
    """ms from now until every LED shows the glow; the channel values seen on the way."""
    seen = []
    ms = 0
    while ms < limit_ms:
        t = hal.ticks_add(t, 17)
        ms += 17
        r._link.last_rx_ms = t  # the host keeps talking
        r.render(t)
        seen.append(leds.last)
        if near(leds.last, GLOW, n):
            return ms, seen, t
    return None, seen, t


def test_stop_reaches_the_glow_within_2_s_from_white_and_from_red():
    for color in ((255, 255, 255), (255, 0, 0), (0, 0, 255), (255, 255, 0)):
        leds, r, lk, host, t = lit_then_stop(color)
        assert host.read(lk, wire.T_ACK), color
        ms, seen, t = frames_until_glow(r, leds, t, 4)
        assert ms is not None and ms <= 2000, (color, ms)
        if color == (255, 255, 255):
            assert ms >= 500, ms  # a fade, not a cut
        # each channel moved one way only (a stop is one transition, never a flash)
        for c in range(12):
            vals = [f[c] for f in seen]
            up = all(a <= b for a, b in zip(vals, vals[1:]))
            down = all(a >= b for a, b in zip(vals, vals[1:]))
            assert up or down, (color, c, vals)


def test_the_slew_alone_would_take_longer_than_2_s():
    # the same fade without the stop's pace: what the fast fade is for
    g = governor.Governor(1, config.Config())
    white = bytearray(b"\xff\xff\xff")
    for i in range(600):
        g.govern(bytearray(white), 0, 17, False, False)
    assert bytes(g.shown) == b"\xff\xff\xff"
    ms = 0
    while bytes(g.shown) != GLOW and ms < 5000:
        g.govern(bytearray(GLOW), 0, 17, False, False)
        ms += 17
    assert ms > 2000, ms


def test_stopped_pod_holds_the_glow_against_the_timeline_and_link_silence():
    leds, r, lk, host, t = lit_then_stop((200, 100, 255))
    assert r.stopped
    # a SCENE_AT is acknowledged, not shown; one waiting from before the stop is dropped
    ms, seen, t = frames_until_glow(r, leds, t, 4)
    host.send(lk, wire.T_SCENE_AT, hal.ticks_us(), wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0, 0, 0, ())
    assert host.read(lk, wire.T_ACK) and r.held_back == 1 and r._at is None
    lk.heard = True
    lk.last_rx_ms = t
    for i in range(200):  # 3.4 s without a word from the host: no other fade starts
        t = hal.ticks_add(t, 17)
        r.due_scene(hal.ticks_us(), t)
        r.render(t)
    assert near(leds.last, GLOW, 4) and r.stopped and not r.safe
    lk.last_rx_ms = t
    host.send(lk, wire.T_SCENE, wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0, 0, 0, ())
    assert not r.stopped  # a SCENE ends the stop
    talking(r, lk, t, 8000)
    assert leds.last == b"\xff" * 12


def test_the_fades_debt_holds_the_next_rise_back():
    # a SCENE right after a stop from white: the LEDs wait until the fast fade is paid
    # for at the slew's pace, so a stop and a scene in turn cannot make a flash
    leds, r, lk, host, t = lit_then_stop((255, 255, 255))
    ms, seen, t = frames_until_glow(r, leds, t, 4)
    host.send(lk, wire.T_SCENE, wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0, 0, 0, ())
    t = talking(r, lk, t, 1000)
    assert near(leds.last, GLOW, 4), leds.last
    t = talking(r, lk, t, 8000)
    assert leds.last == b"\xff" * 12


def test_stop_keeps_an_off_scene_dark_and_ends_a_cross_fade():
    leds, r, lk = make(2)
    host = Host()
    host.send(lk, wire.T_SCENE, wire.EFFECT_BREATHE, 255, (255, 255, 255), 0, 1000, 0, 0, ())
    t = run_for(r, hal.ticks_ms(), 3000)
    host.send(lk, wire.T_SCENE, wire.EFFECT_OFF, 0, (0, 0, 0), 5000, 0, 0, 0, ())
    t = run_for(r, t, 100)
    host.send(lk, wire.T_FADE_SAFE)
    assert r._old is None and r.scene.effect == wire.EFFECT_OFF and r.stopped
    run_for(r, t, 2000)
    assert leds.last == bytes(6)


def test_no_allocation_per_frame_while_stopped():
    leds = hal.Leds(300, "GRB")  # the real HAL write path
    leds.transfer_us = 0
    leds, r, lk = make(300, leds)
    host = Host()
    host.send(lk, wire.T_SCENE, wire.EFFECT_AURORA, 255, (0, 0, 0), 0, 4000, wire.PALETTE_AURORA, 0, ())
    t = run_for(r, hal.ticks_ms(), 2000)
    host.send(lk, wire.T_FADE_SAFE)
    t = hal.ticks_add(t, 17)
    r.render(t)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in range(300):
        t = hal.ticks_add(t, 17)
        lk.last_rx_ms = t
        r.render(t)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def _shown(host, lk):
    return [f for t, f in host.read(lk, wire.T_SCENE_SHOWN)]


def test_the_pod_reports_what_it_shows_and_who_chose_it():
    leds, r, lk = make(2, fade_after_ms=1000)
    host = Host()
    host.send(lk, wire.T_CONNECT, wire.PROTOCOL_VERSION, wire.FINGERPRINT, "h")
    assert _shown(host, lk) == []  # dark since boot: no scene to report
    host.send(lk, wire.T_SCENE, wire.EFFECT_HEARTBEAT, 180, (250, 20, 10), 300, 1200, 0, 0, (40,))
    got = _shown(host, lk)
    assert got == [(wire.SCENE_SOURCE_SET, 0, wire.EFFECT_HEARTBEAT, 180, (250, 20, 10), 300, 1200, 0, 0, (40,))], got
    t = run_for(r, hal.ticks_ms(), 100)
    assert _shown(host, lk) == []  # frames alone report nothing
    # a SCENE_AT reports when it comes due, not when it arrives
    host.send(lk, wire.T_SCENE_AT, hal.ticks_add(hal.ticks_us(), 50000), wire.EFFECT_SOLID, 99, (1, 2, 3), 0, 0, 0, 0, ())
    assert _shown(host, lk) == []
    assert r.due_scene(hal.ticks_add(hal.ticks_us(), 60000), t)
    assert _shown(host, lk) == [(wire.SCENE_SOURCE_TIMELINE, 0, wire.EFFECT_SOLID, 99, (1, 2, 3), 0, 0, 0, 0, ())]
    # night limits starting change what is shown
    host.send(lk, wire.T_NIGHT_MODE, wire.NIGHT_MODE_ON, 0, 0, 0)
    lk.last_rx_ms = t
    t = run_for(r, t, 50)
    assert [f[:3] for f in _shown(host, lk)] == [(wire.SCENE_SOURCE_TIMELINE, wire.SHOWN_NIGHT, wire.EFFECT_SOLID)]
    # link silence: the pod's own fade to safe
    t = run_for(r, t, 1100)
    got = _shown(host, lk)
    assert [f[:4] for f in got] == [(wire.SCENE_SOURCE_POD, wire.SHOWN_NIGHT | wire.SHOWN_LINK_SAFE,
                                     wire.EFFECT_SOLID, 28)], got
    # a stop, and the answer to CONNECT repeats what is shown
    host.send(lk, wire.T_FADE_SAFE)
    host.send(lk, wire.T_CONNECT, wire.PROTOCOL_VERSION, wire.FINGERPRINT, "h2")
    got = host.read(lk)
    kinds = [tp for tp, f in got]
    assert kinds == [wire.T_SCENE_SHOWN, wire.T_ACK, wire.T_HELLO, wire.T_SCENE_SHOWN], kinds
    stop = (wire.SCENE_SOURCE_SET, wire.SHOWN_NIGHT | wire.SHOWN_STOPPED, wire.EFFECT_SOLID, 28,
            render.SAFE_COLOR, 0, 0, 0, 0, ())
    assert got[0][1] == stop and got[3][1] == stop, got
    assert r.reports == 6
