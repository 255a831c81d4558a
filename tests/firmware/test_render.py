# The render step under MicroPython: engine -> governor -> LEDs, scene
# commands and refusals, cross-fades, fade to safe, no allocation, timing.
import gc

import asyncio
import hal
from pod import config, effects, ledwire, link, refusal, render, wire


class FakeLeds:
    def __init__(self, count):
        self.count = count
        self.last = None
        self.frames = 0
        self.shown_us = 0  # pod ticks_us the last frame lit
        self.late_starts = 0

    def write(self, rgb):
        self.last = bytes(rgb)
        self.frames += 1

    def show_at(self, rgb, due_us):
        # as firmware/hal.py: returns at once; the frame lights at due_us (the LED
        # timer), or now if that has passed; says how late it came
        now = hal.ticks_us()
        late = hal.ticks_diff(now, due_us)
        self.write(rgb)
        self.shown_us = now if late > 0 else due_us
        return late if late > 0 else 0


class Port:
    """hal.open_link()'s port, TX side: always room; keeps what the pod sent."""

    def __init__(self):
        self.out = bytearray()

    def tx_free(self):
        return 4096

    def write(self, buf, n):
        self.out.extend(buf[:n])
        return n


def pod_link(r):
    """A real pod link over Port, serving renderer r as app.py wires it."""
    lk = link.Link(Port(), ("pod-r", "0", 1, r.count, 8, 250), r.apply)
    return lk


def make(count=4, fps=60, **cfg_keys):
    cfg = config.Config()
    for k, v in cfg_keys.items():
        assert cfg.set(k, v), k
    leds = FakeLeds(count)
    return leds, render.Renderer(leds, fps, cfg)


def run_for(r, t, ms, step=17):
    """Render frames every step ms for ms; returns the pod time reached."""
    end = hal.ticks_add(t, ms)
    while hal.ticks_diff(end, t) > 0:
        t = hal.ticks_add(t, step)
        r.render(t)
    return t


def test_boot_is_dark():
    leds, r = make()
    r.render(hal.ticks_ms())
    assert leds.last == bytes(12)


def test_solid_reaches_its_colour_gently():
    leds, r = make(3)
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 128, 0), 0, 0)) == 0
    t = hal.ticks_ms()
    r.render(hal.ticks_add(t, 17))
    assert leds.last != bytes((255, 128, 0)) * 3  # no jump from dark to full: the governor slews
    run_for(r, t, 8000)
    assert leds.last == bytes((255, 128, 0)) * 3
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 128, (255, 128, 0), 0, 0)) == 0
    run_for(r, t, 8000)
    assert leds.last == bytes((128, 64, 0)) * 3


def test_breathe_is_dark_at_start_full_mid_period():
    leds, r = make(1)
    r.apply(wire.Scene(wire.EFFECT_BREATHE, 255, (200, 100, 50), 0, 1000))
    t0 = r._start_ms
    r.render(t0)
    assert r.frame == b"\x00\x00\x00"
    r.render(hal.ticks_add(t0, 500))
    assert r.frame == bytes((200, 100, 50))
    r.render(hal.ticks_add(t0, 1500))  # periodic
    assert r.frame == bytes((200, 100, 50))


def test_breathe_across_tick_wrap():
    leds, r = make(1)
    r.apply(wire.Scene(wire.EFFECT_BREATHE, 255, (255, 255, 255), 0, 1000))
    r._start_ms = hal.TICKS_PERIOD - 100  # scene began 100 ms before the wrap
    r.render(400)  # 500 ms later, after the wrap
    assert r.frame == b"\xff\xff\xff"


def test_transition_cross_fades_the_engine_output():
    leds, r = make(1)
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (200, 0, 0), 0, 0))
    r.render(hal.ticks_ms())
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (0, 0, 200), 1000, 0))
    t0 = r._start_ms
    r.render(hal.ticks_add(t0, 500))
    assert r.frame == bytes((100, 0, 100))
    r.render(hal.ticks_add(t0, 1000))
    assert r.frame == bytes((0, 0, 200))


def test_refusals_leave_scene_unchanged():
    leds, r = make(1)
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (1, 2, 3), 0, 0))
    assert r.apply(wire.Scene(99, 255, (0, 0, 0), 0, 0)) == wire.NACK_REASON_UNKNOWN_EFFECT
    assert r.apply(wire.Scene(wire.EFFECT_BREATHE, 255, (0, 0, 0), 0, 0)) == wire.NACK_REASON_BAD_PARAM  # no period
    assert r.apply(wire.Scene(wire.EFFECT_SLOW_WAVE, 255, (0, 0, 0), 0, 5000, 0, 0, (1,))) == wire.NACK_REASON_BAD_PARAM
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (0, 0, 0), 0, 0, 0, 0, (1,))) == wire.NACK_REASON_BAD_PARAM
    assert r.apply(wire.Scene(wire.EFFECT_AURORA, 255, (0, 0, 0), 0, 5000, 77)) == wire.NACK_REASON_BAD_PARAM
    assert r.scene.effect == wire.EFFECT_SOLID and bytes(r.scene.color) == b"\x01\x02\x03"


def test_refusals_name_the_field_and_its_range():
    leds, r = make(1)
    d = refusal.DETAIL
    none = wire.NACK_NO_FIELD
    # heartbeat's period is 500..3000 ms (protocol/messages.py EFFECT_PERIODS): 4000 is refused
    assert r.apply(wire.Scene(wire.EFFECT_HEARTBEAT, 255, (9, 9, 9), 0, 4000)) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_SCENE_PERIOD_MS, none, 500, 3000], d
    lo, hi, default = wire.EFFECT_PERIODS[wire.EFFECT_HEARTBEAT]
    assert r.apply(wire.Scene(wire.EFFECT_HEARTBEAT, 255, (9, 9, 9), 0, default)) == 0
    assert r.apply(wire.Scene(wire.EFFECT_SLOW_WAVE, 255, (0, 0, 0), 0, 5000, 0, 0, (30, 300))) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_SCENE_PARAMS, 1, 0, 255], d  # params.1 (floor) is 0..255
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (0, 0, 0), 0, 0, 0, 0, (1,))) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_SCENE_PARAMS, none, 0, 0], d  # solid takes no params at all
    assert r.apply(wire.Scene(wire.EFFECT_AURORA, 255, (0, 0, 0), 0, 5000, 77)) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_SCENE_PALETTE, none, 0, len(wire.PALETTE) - 1], d
    assert r.apply(wire.Scene(99, 255, (0, 0, 0), 0, 0)) == wire.NACK_REASON_UNKNOWN_EFFECT
    assert d == [wire.F_SCENE_EFFECT, none, 0, max(wire.EFFECT.values())], d
    # SCENE_AT's scene fields are one further along (at_us first)
    assert r.scene_at(0, wire.Scene(wire.EFFECT_TIDE, 255, (0, 0, 0), 0, 1000)) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_SCENE_AT_PERIOD_MS, none, 2000, 65535], d
    assert r.night(3, 0, 0, 0) == wire.NACK_REASON_BAD_PARAM and d == [wire.F_NIGHT_MODE_MODE, none, 0, 2]
    assert r.night(wire.NIGHT_MODE_SCHEDULE, 0, 1440, 0) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_NIGHT_MODE_END_MIN, none, 0, 1439], d
    assert r.night(wire.NIGHT_MODE_SCHEDULE, 0, 10, 2000) == wire.NACK_REASON_BAD_PARAM
    assert d == [wire.F_NIGHT_MODE_NOW_MIN, none, 0, 1439], d


def test_every_effect_accepts_its_default_period():
    leds, r = make(1, strobe_enabled=True)
    for eid, spec in effects.REGISTRY.items():
        per = wire.EFFECT_PERIODS[eid][2] if eid in wire.EFFECT_PERIODS else 0
        assert r.apply(wire.Scene(eid, 255, (9, 9, 9), 0, per, 0, wire.SCENE_FLAG_STROBE_OPT_IN)) == 0, spec.name
        assert spec.period == wire.EFFECT_PERIODS.get(eid), spec.name


def test_strobe_needs_provisioning_and_the_commands_opt_in():
    opt_in = wire.SCENE_FLAG_STROBE_OPT_IN
    leds, r = make(1)
    assert r.apply(wire.Scene(wire.EFFECT_STROBE, 255, (255, 255, 255), 0, 100, 0, opt_in)) == wire.NACK_REASON_SAFETY
    leds, r = make(1, strobe_enabled=True)
    assert r.apply(wire.Scene(wire.EFFECT_STROBE, 255, (255, 255, 255), 0, 100, 0, 0)) == wire.NACK_REASON_SAFETY
    assert r.apply(wire.Scene(wire.EFFECT_STROBE, 255, (255, 255, 255), 0, 50, 0, opt_in)) == wire.NACK_REASON_BAD_PARAM  # 20 Hz
    assert r.refused_safety == 1
    assert r.apply(wire.Scene(wire.EFFECT_STROBE, 255, (255, 255, 255), 0, 100, 0, opt_in)) == 0
    t = run_for(r, hal.ticks_ms(), 3000, step=10)
    seen = set()
    for _ in range(20):
        t = hal.ticks_add(t, 10)
        r.render(t)
        seen.add(leds.last)
    assert b"\x00\x00\x00" in seen and b"\xff\xff\xff" in seen  # 10 Hz on/off really shown


def test_red_strobe_is_still_red_flash_limited():
    opt_in = wire.SCENE_FLAG_STROBE_OPT_IN
    leds, r = make(1, strobe_enabled=True)
    assert r.apply(wire.Scene(wire.EFFECT_STROBE, 255, (255, 0, 0), 0, 100, 0, opt_in)) == 0
    t = run_for(r, hal.ticks_ms(), 2000, step=10)
    lo, hi = 255, 0
    for _ in range(100):
        t = hal.ticks_add(t, 10)
        r.render(t)
        lo = min(lo, leds.last[0])
        hi = max(hi, leds.last[0])
    lin = ledwire.LIN16
    swing = (lin[2 * hi] | lin[2 * hi + 1] << 8) - (lin[2 * lo] | lin[2 * lo + 1] << 8)
    assert swing < 4096, (lo, hi)  # R-G-B never changes by a red-flash 1/16: it glows


def test_every_protocol_effect_is_registered_with_a_schema():
    assert sorted(effects.REGISTRY) == sorted(wire.EFFECT.values())
    assert len(effects.REGISTRY) >= 13
    for eid, spec in effects.REGISTRY.items():
        assert wire.EFFECT[spec.name] == eid
        for name, unit, default, low, high in spec.params:
            assert low <= default <= high, (spec.name, name)
        assert len(spec.params) <= wire.MAX_SCENE_PARAMS


def test_every_effect_renders_something_in_range():
    for eid, spec in effects.REGISTRY.items():
        leds, r = make(16, strobe_enabled=True)
        per = min(spec.period[1], max(spec.period[0], 3000)) if spec.period else 0
        assert r.apply(wire.Scene(eid, 255, (255, 200, 120), 0, per, wire.PALETTE_AURORA, wire.SCENE_FLAG_STROBE_OPT_IN)) == 0
        r.inputs.alpha = 200
        r.inputs.group = 50000
        t = run_for(r, hal.ticks_ms(), 4000)
        lit = 0
        for _ in range(150):
            t = hal.ticks_add(t, 17)
            r.render(t)
            lit = max(lit, max(r.frame))
        if eid == wire.EFFECT_OFF:
            assert lit == 0
        else:
            assert lit > 0, spec.name


def test_fade_to_safe_after_link_silence_and_off_stays_dark():
    leds, r = make(2)
    lk = pod_link(r)
    r.watch(lk, 2000)
    t = hal.ticks_ms()
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (0, 0, 255), 0, 0))
    t = run_for(r, t, 5000)  # never heard: a pod that never had a host stays as told
    assert not r.safe
    lk.heard = True
    lk.last_rx_ms = t
    t = run_for(r, t, 1900)
    assert not r.safe
    t = run_for(r, t, 200)
    assert r.safe and r.scene.effect == wire.EFFECT_SOLID
    t = run_for(r, t, 15000)
    want = bytes(render.SAFE_COLOR[i] * 28 // 255 for i in range(3))
    assert all(abs(leds.last[i] - want[i]) <= 1 for i in range(3)), (leds.last, want)
    assert r.apply(wire.Scene(wire.EFFECT_OFF, 0, (0, 0, 0), 0, 0)) == 0
    assert not r.safe
    t = run_for(r, t, 15000)
    assert not r.safe and leds.last == bytes(6)


def test_night_mode_caps_blue_and_brightness():
    leds, r = make(2, night_blue_max=10, night_brightness_max=60)
    assert r.night(wire.NIGHT_MODE_ON, 0, 0, 0) == 0
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (200, 200, 255), 0, 0))
    run_for(r, hal.ticks_ms(), 15000)
    assert max(leds.last) <= 60 and leds.last[2] <= 10, leds.last
    assert r.night(7, 0, 0, 0) == wire.NACK_REASON_BAD_PARAM
    assert r.night(wire.NIGHT_MODE_SCHEDULE, 1440, 0, 0) == wire.NACK_REASON_BAD_PARAM


def test_night_schedule_follows_the_hosts_clock_across_midnight():
    leds, r = make(1)
    g = r.governor
    t = hal.ticks_ms()
    assert r.night(wire.NIGHT_MODE_SCHEDULE, 22 * 60, 7 * 60, 21 * 60 + 59) == 0
    now = g._clock_ms
    assert not g.is_night(now, hal.ticks_diff, hal.ticks_add)
    assert g.is_night(hal.ticks_add(now, 61000), hal.ticks_diff, hal.ticks_add)
    # 9 hours later: 06:59 still night, 07:00 day; hour rebasing on the way
    for h in range(1, 10):
        g.is_night(hal.ticks_add(now, h * 3600000), hal.ticks_diff, hal.ticks_add)
    assert g.is_night(hal.ticks_add(now, 9 * 3600000), hal.ticks_diff, hal.ticks_add)
    assert not g.is_night(hal.ticks_add(now, 9 * 3600000 + 60000), hal.ticks_diff, hal.ticks_add)


def _duty_ma(buf, cfg):
    s = 0
    for v in buf:
        s += ledwire.DUTY[v]
    return s * cfg.led_ma / 255 + cfg.led_idle_ma * (len(buf) // 3)


def test_power_limit_keeps_the_estimate_under_budget():
    leds, r = make(100, psu_ma=1500, board_reserve_ma=300, led_ma=20)
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0))
    run_for(r, hal.ticks_ms(), 12000)
    ma = _duty_ma(leds.last, r.cfg)
    assert 1100 <= ma <= 1200, ma  # 100 white LEDs would draw 6100 mA: scaled to fit
    assert r.governor.power_limited > 0


def test_power_limit_takes_the_highest_level_that_fits_frame_after_frame():
    from pod import governor
    cfg = config.Config()
    for k, v in (("led_count", 50), ("psu_ma", 1000), ("board_reserve_ma", 0), ("led_ma", 20)):
        assert cfg.set(k, v), k
    g = governor.Governor(50, cfg)
    seed = 12345
    frame = bytearray(150)
    t = 0
    for i in range(300):
        # a bright frame drifting slowly, then jumps up and down (the last level as a bad guess)
        for k in range(150):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            frame[k] = 255 - (seed >> 16) % (40 if i % 50 else 250)
        t += 17
        g.govern(frame, t, 17, False, False)
        limited = governor._duty_sum(frame, 150, ledwire.DUTY, 256) > g.duty_max
        best = 256
        if limited:
            best = 0
            while best < 256 and governor._duty_sum(frame, 150, ledwire.DUTY, best + 1) <= g.duty_max:
                best += 1
            assert g._limit_level == best, (i, g._limit_level, best)
    assert g.power_limited > 250


def test_brightness_cap_from_pod_json():
    leds, r = make(2, brightness_max=100)
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 40, 255), 0, 0))
    run_for(r, hal.ticks_ms(), 12000)
    assert max(leds.last) == 100


def test_encoders_order_gamma_rgbw_and_apa102():
    src = bytearray((255, 128, 0, 10, 20, 30))
    d = ledwire.DUTY
    assert d[0] == 0 and d[255] == 255 and d[128] == 55  # sRGB: half code is ~21.6 % light
    out = bytearray(6)
    ledwire.encode(ledwire.KIND_WS2812, out, src, 6, ledwire.order_index("GRB"))
    assert out == bytes((d[128], 255, 0, d[20], d[10], d[30]))
    out = bytearray(8)
    ledwire.encode(ledwire.KIND_SK6812_RGBW, out, bytearray((200, 200, 255, 0, 0, 9)), 6, ledwire.order_index("GRBW"))
    w = d[200]
    assert out == bytes((0, 0, d[255] - w, w, 0, 0, d[9], 0))
    out = bytearray(ledwire.wire_size(ledwire.KIND_APA102, 2))
    ledwire.encode(ledwire.KIND_APA102, out, src, 6, ledwire.order_index("BGR"))
    assert out == bytes((0, 0, 0, 0, 0xFF, 0, d[128], 255, 0xFF, d[30], d[20], d[10], 0xFF))


def test_hal_leds_take_every_type():
    for kind, order, size in (("ws2812", "GRB", 9), ("sk6812_rgbw", "GRB", 12), ("apa102", "BGR", 17)):
        leds = hal.Leds(3, order, kind)
        leds.write(bytearray(9))
        assert len(leds.wire) == size, kind


def test_no_allocation_per_frame_over_1000_frames_of_every_effect():
    leds = hal.Leds(300, "GRB")  # the real HAL write path (datagrams dropped if nobody listens)
    leds.transfer_us = 0  # the wire's board time is not what this measures: 14 000 frames would take 2 min
    cfg = config.Config()
    cfg.set("strobe_enabled", True)
    r = render.Renderer(leds, 60, cfg)
    lk = pod_link(r)
    lk.heard = True
    r.watch(lk, 2000)
    r.night(wire.NIGHT_MODE_SCHEDULE, 0, 720, 600)
    t = hal.ticks_ms()
    used = {}
    for eid, spec in effects.REGISTRY.items():
        per = min(spec.period[1], max(spec.period[0], 3000)) if spec.period else 0
        r.apply(wire.Scene(eid, 200, (255, 90, 30), 400, per, wire.PALETTE_OCEAN, wire.SCENE_FLAG_STROBE_OPT_IN))
        lk.last_rx_ms = t
        t = hal.ticks_add(t, 17)
        r.render(t)  # first frame after a scene change may build things
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for i in range(1000):
            t = hal.ticks_add(t, 17)
            lk.last_rx_ms = t  # the host keeps talking: no fade to safe in this loop
            r.render(t)
        used[spec.name] = gc.mem_alloc() - before
        gc.enable()
    assert all(v == 0 for v in used.values()), used


async def test_run_keeps_the_frame_rate_and_feeds_the_watchdog():
    class Dog:
        feeds = 0

        def feed(self):
            Dog.feeds += 1

    leds, r = make(8, fps=100)
    task = asyncio.create_task(r.run(Dog()))
    await asyncio.sleep_ms(600)
    task.cancel()
    await asyncio.sleep_ms(0)
    assert 50 <= r.frames_rendered <= 62, r.frames_rendered
    assert Dog.feeds >= 1


_M30 = (1 << 30) - 1


def _board_ticks_add(t, delta):
    # the board's ticks_add never forms a value >= 2**30; the emulator shim's (t + delta) & mask
    # does, 32-bit, and allocates there (its owner has the fix): the firmware is measured here
    if delta >= 0:
        return t + delta if t <= _M30 - delta else t - (_M30 - delta) - 1
    return t + delta if t + delta >= 0 else (t + delta + _M30) + 1


def _board_ticks_diff(a, b):
    d = a - b
    if d >= 1 << 29:
        return (d - _M30) - 1
    if d < -(1 << 29):
        return (d + _M30) + 1
    return d


def test_no_allocation_at_extreme_parameters_late_in_long_scenes_via_scene_at():
    # the largest products effects form (highest params, longest periods, scene time near
    # the rebase, a cross-fade) stay small ints on a 32-bit port; the scene arrives by
    # SCENE_AT with a host instant past 2**30 and the frames run on a FRAME_PHASE grid
    shim = hal.ticks_add, hal.ticks_diff
    hal.ticks_add, hal.ticks_diff = _board_ticks_add, _board_ticks_diff
    try:
        _extreme_frames()
    finally:
        hal.ticks_add, hal.ticks_diff = shim


def _extreme_frames():
    leds = hal.Leds(300, "GRB")
    leds.transfer_us = 0  # allocation, not the wire's board time, is measured here
    cfg = config.Config()
    cfg.set("strobe_enabled", True)
    r = render.Renderer(leds, 60, cfg)
    t = hal.ticks_ms()
    us = hal.ticks_us()
    used = {}
    for eid, spec in effects.REGISTRY.items():
        per = spec.period[1] if spec.period else 0
        params = tuple(p[4] for p in spec.params)
        at = hal.ticks_add(us, 1000)
        assert r.scene_at(at + 3 * hal.TICKS_PERIOD, wire.Scene(eid, 255, (255, 255, 255), 65535, per, wire.PALETTE_AURORA,
                          wire.SCENE_FLAG_STROBE_OPT_IN, params)) == 0
        r.frame_phase(at + hal.TICKS_PERIOD, 16666)
        assert r.due_scene(hal.ticks_add(at, 20), t)
        r._start_ms = hal.ticks_add(t, -((1 << 20) - 3000))  # late in the scene: the rebase comes
        t = hal.ticks_add(t, 17)
        r.render(t)
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for i in range(400):
            t = hal.ticks_add(t, 17)
            r.due_scene(hal.ticks_add(at, i * 16666), t)
            r.render(t)
        used[spec.name] = gc.mem_alloc() - before
        gc.enable()
    assert all(v == 0 for v in used.values()), used


async def test_run_at_60_fps_under_the_tick_model_keeps_its_grid():
    # the shim's asyncio waits end on a 10 ms RTOS tick as the board's do: frames
    # must wake on the frame timer and be handed to show_at before their instant,
    # at most a period ahead

    class GridLeds(FakeLeds):
        def __init__(self, count):
            super().__init__(count)
            self.dues = []
            self.early = 0

        def show_at(self, rgb, due_us):
            self.dues.append(due_us)
            self.early = max(self.early, hal.ticks_diff(due_us, hal.ticks_us()))
            return FakeLeds.show_at(self, rgb, due_us)

    leds = GridLeds(30)
    r = render.Renderer(leds, 60)
    task = asyncio.create_task(r.run())
    await asyncio.sleep_ms(1200)
    task.cancel()
    await asyncio.sleep_ms(0)
    dues = leds.dues
    assert len(dues) >= 66, len(dues)
    gaps = [hal.ticks_diff(b, a) for a, b in zip(dues, dues[1:])]
    assert all(g > 0 and g % r.period_us == 0 for g in gaps), gaps  # on its grid, whatever happens
    skipped = [g for g in gaps if g != r.period_us]
    assert len(skipped) <= 2, skipped  # next to no frame skipped (two allowed for a loaded host)
    assert r.render_overruns <= 2, r.render_overruns
    assert 0 < leds.early < r.period_us, (leds.early, r.period_us)


async def test_run_collects_garbage_every_400_ms_just_after_a_frames_instant():
    # the loop's collections come at its quiet moment: after a frame's instant (the LED
    # timer has handed it over), long before the next frame is computed; never before
    # an instant, where a pause would hold the frame's start

    class GridLeds(FakeLeds):
        def __init__(self, count):
            super().__init__(count)
            self.dues = []

        def show_at(self, rgb, due_us):
            self.dues.append(due_us)
            return FakeLeds.show_at(self, rgb, due_us)

    class CountingGc:
        # the runtime's gc, with each collection's instant noted
        def __init__(self, real):
            self.real = real
            self.at = []  # (pod us, the last frame's instant)

        def collect(self):
            self.at.append((hal.ticks_us(), leds.dues[-1]))
            self.real.collect()

    leds = GridLeds(30)
    r = render.Renderer(leds, 60)
    real, render.gc = render.gc, CountingGc(render.gc)
    try:
        task = asyncio.create_task(r.run())
        await asyncio.sleep_ms(2100)
        task.cancel()
        await asyncio.sleep_ms(0)
        at = render.gc.at
    finally:
        render.gc = real
    assert 5 <= len(at) <= 6, at
    # the grid: each collection follows the first frame instant 400 ms after the last one's (the
    # collection's own instant carries the host's scheduling delay, checked below on its own)
    for (_, a), (_, b) in zip(at, at[1:]):
        assert 399_000 <= hal.ticks_diff(b, a) < 400_000 + 2 * r.period_us, at
    assert r.collections == len(at)
    for now, due in at:
        after = hal.ticks_diff(now, due)
        # after the instant, and the next frame (one period on, computed a lead before) not yet due
        assert 500 <= after < r.period_us - r.lead_us, (after, r.period_us, r.lead_us)
    assert r.render_overruns <= 2, r.render_overruns  # a loaded host may make one or two late
