# LED power limits (pod/derate.py) under MicroPython, through the emulator HAL
# shim's sensors: this test plays the emulator and writes D/sensors.bin
# (<hHB: 1/16 degC, mV, flags) as EmulatedPod.set_sensors does.
import gc
import os
import struct

import hal
from pod import board, config, derate, render, wire
import peer_wire  # the host's side of the codec (generated)

_DIR = os.getenv("HYPNOLUM_POD_DIR") or "."
NO_THERMOMETER = 1
CRC_ERROR = 2
FULL = min(board.LED_LIMIT_MA, board.LED_LIMIT_MA_PER_OUTPUT)  # the default pod.json's
FLOOR = FULL * board.LED_DERATE_FLOOR_PCT // 100


def sensors(temp_c=25, vin_mv=5000, flags=0):
    with open(_DIR + "/sensors.bin", "wb") as f:
        f.write(struct.pack("<hHB", int(temp_c * 16), vin_mv, flags))


class FakeLeds:
    def __init__(self, count):
        self.count = count
        self.last = None

    def write(self, rgb):
        self.last = bytes(rgb)


def make(count=30, **cfg_keys):
    cfg = config.Config()
    for k, v in cfg_keys.items():
        assert cfg.set(k, v), k
    leds = FakeLeds(count)
    r = render.Renderer(leds, 60, cfg)
    return leds, r, derate.Derate(r.governor, cfg)


def run(r, d, t, ms):
    """Frames every 17 ms and a derate pass every 250 ms for ms of pod time; returns the time reached."""
    end = hal.ticks_add(t, ms)
    next_pass = t
    while hal.ticks_diff(end, t) > 0:
        if hal.ticks_diff(t, next_pass) >= 0:
            step(d, t)
            next_pass = hal.ticks_add(next_pass, 250)
        t = hal.ticks_add(t, 17)
        r.render(t)
    return t


def step(d, t):
    drive(d.step(t))


def drive(coro):
    try:
        while True:
            coro.send(None)  # the shim's sensors never wait; sleep_ms(0) yields are passed over
    except StopIteration:
        pass


def passes(d, t, n):
    for _ in range(n):
        t = hal.ticks_add(t, 250)
        step(d, t)
    return t


def duty_ma(buf, cfg):
    from pod import ledwire
    s = 0
    for v in buf:
        s += ledwire.DUTY[v]
    return s * cfg.led_ma // 255 + cfg.led_idle_ma * (len(buf) // 3)


def test_derating_curve_follows_the_board_constants():
    sensors(25)
    _, r, d = make()
    t = hal.ticks_ms()
    assert r.governor.cap_ma == FLOOR  # no reading yet: the floor
    span = board.LED_DERATE_FULL_C - board.LED_DERATE_START_C
    for temp_c, want in ((25, FULL), (board.LED_DERATE_START_C, FULL),
                         (board.LED_DERATE_START_C + span // 4, FULL - (FULL - FLOOR) // 4),
                         (board.LED_DERATE_START_C + span // 2, FULL - (FULL - FLOOR) // 2),
                         (board.LED_DERATE_FULL_C, FLOOR), (board.LED_OFF_C - 1, FLOOR), (40, FULL)):
        sensors(temp_c)
        t = passes(d, t, 5)  # a conversion is read 750 ms or more after it started
        assert d.temp_c16 == temp_c * 16, (temp_c, d.temp_c16)
        assert r.governor.cap_ma == want, (temp_c, r.governor.cap_ma, want)
        assert bool(d.flags & wire.POWER_FLAG_THERMAL) == (temp_c > board.LED_DERATE_START_C), (temp_c, d.flags)
        assert not d.flags & wire.POWER_FLAG_TEMP_FAULT


def test_sensor_failure_fails_safe_to_the_floor_and_is_flagged():
    sensors(25)
    _, r, d = make()
    t = passes(d, hal.ticks_ms(), 5)
    assert r.governor.cap_ma == FULL and d.flags == 0
    for bad in (NO_THERMOMETER, CRC_ERROR):
        sensors(25, flags=bad)
        t = passes(d, t, 4)  # 1 s: the last good reading still stands
        assert r.governor.cap_ma == FULL, bad
        t = passes(d, t, 12)  # 4 s: stale
        assert r.governor.cap_ma == FLOOR, (bad, r.governor.cap_ma)
        assert d.flags & wire.POWER_FLAG_TEMP_FAULT, bad
        sensors(25)
        t = passes(d, t, 5)
        assert r.governor.cap_ma == FULL and d.flags == 0, bad
    # no thermometer at boot: the floor at once, flagged after the first attempt
    sensors(25, flags=NO_THERMOMETER)
    _, r, d = make()
    assert r.governor.cap_ma == FLOOR
    passes(d, t, 2)
    assert r.governor.cap_ma == FLOOR and d.flags & wire.POWER_FLAG_TEMP_FAULT
    # a hot last reading, then silence: stays dark, not the floor
    sensors(board.LED_OFF_C + 1)
    _, r, d = make()
    t = passes(d, t, 5)
    sensors(25, flags=NO_THERMOMETER)
    t = passes(d, t, 20)
    assert r.governor.cap_ma == 0 and d.flags & wire.POWER_FLAG_TEMP_FAULT


def test_dark_at_led_off_c_with_hysteresis():
    sensors(25)
    leds, r, d = make(20)
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0)) == 0
    t = run(r, d, hal.ticks_ms(), 4000)
    assert max(leds.last) == 255  # 20 white LEDs fit the limit
    sensors(board.LED_OFF_C)
    t = run(r, d, t, 5000)  # the flash limit's pace: dark within ~2.5 s
    assert r.governor.cap_ma == 0 and d.flags & wire.POWER_FLAG_HOT_OFF
    assert leds.last == bytes(60), leds.last
    sensors(board.LED_OFF_C - 1)  # within the hysteresis: still dark
    t = run(r, d, t, 2000)
    assert leds.last == bytes(60)
    sensors(board.LED_OFF_C - 3)
    t = run(r, d, t, 2000)
    assert r.governor.cap_ma == FLOOR and max(leds.last) > 0
    assert duty_ma(leds.last, r.cfg) <= FLOOR


def test_under_voltage_lowers_the_limit_and_cuts_off():
    sensors(25, 5000)
    leds, r, d = make(60)
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0)) == 0
    t = run(r, d, hal.ticks_ms(), 4000)
    drawn = r.governor.estimate_ma()
    assert drawn > FULL * 9 // 10 and not d.flags & wire.POWER_FLAG_UNDERVOLT, drawn
    sensors(25, 4500)  # the rail sags and (in the shim) does not recover: down to the floor
    t = run(r, d, t, 300)
    assert r.governor.cap_ma <= drawn * 3 // 4 + 1, (r.governor.cap_ma, drawn)  # bites on the first pass
    assert d.flags & wire.POWER_FLAG_UNDERVOLT
    t = run(r, d, t, 4000)
    assert r.governor.cap_ma == FULL * 20 // 100, r.governor.cap_ma
    assert duty_ma(leds.last, r.cfg) <= FULL * 20 // 100
    sensors(25, 4650)  # inside the hysteresis band: held
    t = run(r, d, t, 1000)
    assert r.governor.cap_ma == FULL * 20 // 100
    sensors(25, 4200)  # below the cut-off: dark
    t = run(r, d, t, 4000)
    assert r.governor.cap_ma == 0 and d.flags & wire.POWER_FLAG_VIN_CUTOFF
    assert leds.last == bytes(180)
    sensors(25, 4650)  # above the cut-off but not back to normal: still dark
    t = run(r, d, t, 1000)
    assert r.governor.cap_ma == 0
    sensors(25, 5000)  # recovered: back to full within 16 passes
    t = run(r, d, t, 4500)
    assert r.governor.cap_ma == FULL and d.flags == 0, (r.governor.cap_ma, d.flags)


def test_per_output_limit_holds_for_a_white_frame_on_many_leds():
    sensors(25, 5000)
    assert board.LED_LIMIT_MA_PER_OUTPUT < board.LED_LIMIT_MA  # else this test shows nothing
    leds, r, d = make(150)  # the default pod.json: psu_ma = LED_LIMIT_MA
    assert r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0)) == 0
    t = run(r, d, hal.ticks_ms(), 5000)
    est = r.governor.estimate_ma()
    assert board.LED_LIMIT_MA_PER_OUTPUT * 9 // 10 <= est <= board.LED_LIMIT_MA_PER_OUTPUT, est
    assert duty_ma(leds.last, r.cfg) <= board.LED_LIMIT_MA_PER_OUTPUT
    # a pod.json psu_ma below the per-output limit still binds
    leds, r, d = make(150, psu_ma=1000)
    r.apply(wire.Scene(wire.EFFECT_SOLID, 255, (255, 255, 255), 0, 0))
    run(r, d, hal.ticks_ms(), 5000)
    assert 900 <= r.governor.estimate_ma() <= 1000


def test_power_report_and_a_pass_allocates_little():
    class Link:
        body = bytearray(64)
        sent = []
        logs = []

        def send_telemetry(self, type_, end):
            self.sent.append(peer_wire.unpack_power(self.body, 4, end))

        def send_log(self, level, text):
            self.logs.append((level, text))

    lk = Link()
    sensors(60, 4900)
    _, r, _ = make()
    d = derate.Derate(r.governor, r.cfg, lk)
    t = passes(d, hal.ticks_ms(), 8)
    assert lk.sent[-1] == (60 * 16, 4900, FULL - (FULL - FLOOR) // 2, FULL, wire.POWER_FLAG_THERMAL), lk.sent
    assert not lk.logs
    sensors(60, 4900, NO_THERMOMETER)
    t = passes(d, t, 16)
    assert lk.sent[-1][4] & wire.POWER_FLAG_TEMP_FAULT and lk.sent[-1][2] == FLOOR
    assert len(lk.logs) == 1 and lk.logs[0][0] == wire.LOG_LEVEL_WARNING, lk.logs
    sensors(25, 5000)
    t = passes(d, t, 8)

    class Quiet:  # a link that keeps nothing: what is measured is derate's
        body = bytearray(64)

        def send_telemetry(self, type_, end):
            pass

    d.link = Quiet()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(40):  # 10 s of passes with POWER frames, between temperature reads
        t = hal.ticks_add(t, 250)
        if not d.temperature_due(t):
            d.update(t)
    assert gc.mem_alloc() - before == 0, gc.mem_alloc() - before
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(40):  # as run() does it, reads included
        t = hal.ticks_add(t, 250)
        if d.temperature_due(t):
            drive(d.read_temperature(t))
        d.update(t)
    per_s = (gc.mem_alloc() - before) // 10
    assert per_s <= 400, per_s  # the thermometer's coroutines, once a second
