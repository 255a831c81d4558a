"""LED power limits from the board's sensors: heat, the 5 V rail, each output.

The governor keeps every frame's estimated current under one cap
(Governor.set_cap_ma); this module sets it, every _PASS_MS, to the lowest of:

- full: psu_ma - board_reserve_ma, and LED_LIMIT_MA_PER_OUTPUT. hal drives one
  chain (one-wire data on output 0; APA102 clock and data on outputs 0 and 1,
  its power through one connector), so every LED's current can pass one
  output's connector and branch trace: the per-output limit holds for them all.
- thermal, from the hottest DS18B20: full up to LED_DERATE_START_C, falling
  linearly to LED_DERATE_FLOOR_PCT at LED_DERATE_FULL_C, the floor up to
  LED_OFF_C, dark from there (on again _OFF_HYST_C16 below it). No valid
  reading for _STALE_MS (absent, CRC errors, a bus held low), or none yet since
  boot: the floor, or less if the last reading said less.
- supply: VIN under _UV_START_MV lowers the cap to 3/4 of what the LEDs draw,
  every pass, down to _UV_FLOOR_PCT of full, so the rail recovers; from
  _UV_OK_MV up it climbs back by 1/16 of full a pass; under _UV_CUT_MV dark
  until the rail is back at _UV_OK_MV.

The thermometer is never waited for: a conversion is started, read on the
first pass _CONVERT_MS (12 bits: 750 ms) later, and the next one started.
A POWER frame reports the state once a second, and a LOG line says when a
fault or a cut starts. A pass allocates nothing, except the thermometer's
coroutines once a second.
"""
import asyncio

import hal
from micropython import const

from pod import board, wire

_PASS_MS = const(250)
_REPORT_EVERY = const(4)  # passes: a POWER frame a second
_CONVERT_MS = const(750)  # DS18B20 12-bit conversion time
_STALE_MS = const(3000)  # a last good reading older than this is no reading (heat moves slower)
_VIN_SAMPLES = const(4)  # averaged per pass: the strips' PWM ripples the rail
_OFF_HYST_C16 = const(32)  # 2 degC: no flicker at LED_OFF_C
_NO_TEMP = const(-32768)
# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
# end of wire layout
# Supply thresholds (the 5 V rail at the VIN divider):
# - 4.6 V: a 5 V supply within its few per cent, read through the ADC's ~2 % after
#   calibration, stays above it; below it the rail is sagging under the LEDs' load
#   (a supply at its current limit, thin or long wiring), and WS2812B colours shift
#   (blue and green need the most headroom above their LEDs' forward voltage).
# - 4.7 V: 100 mV of hysteresis, well above the averaged ADC's noise.
# - 4.3 V: dark. The logic's 3.3 V LDO (AP2112K: <= 0.4 V dropout at 600 mA) still
#   has ~0.6 V in hand, so the pod stays up to report it; a rail this low means the
#   supply is failing (overload, hiccup) and the LEDs show wrong colours.
_UV_START_MV = const(4600)
_UV_OK_MV = const(4700)
_UV_CUT_MV = const(4300)
_UV_FLOOR_PCT = const(20)

# another module's constants are not compile-time consts here: module globals
_LOUD = wire.POWER_FLAG_TEMP_FAULT | wire.POWER_FLAG_HOT_OFF | wire.POWER_FLAG_VIN_CUTOFF | wire.POWER_FLAG_VIN_FAULT
_START_C16 = board.LED_DERATE_START_C * 16
_FULL_C16 = board.LED_DERATE_FULL_C * 16
_OFF_C16 = board.LED_OFF_C * 16


class Derate:
    def __init__(self, governor, cfg, link=None):
        self.governor = governor
        self.link = link
        full = cfg.psu_ma - cfg.board_reserve_ma
        self.full_ma = full if full < board.LED_LIMIT_MA_PER_OUTPUT else board.LED_LIMIT_MA_PER_OUTPUT
        self.floor_ma = self.full_ma * board.LED_DERATE_FLOOR_PCT // 100
        self.thermometer = hal.Thermometer()
        self.vin = hal.VinSense()
        self.temp_c16 = _NO_TEMP  # the last good reading
        self._good_ms = 0
        self._have = False  # a good reading since boot
        self._tried = False  # a reading was attempted (before: pending, not a fault)
        self._conv_ms = 0
        self._converting = False
        self._hot_off = False
        self.vin_mv = 0  # 0: unreadable
        self._cut = False
        self.thermal_ma = self.floor_ma  # no reading yet: the floor
        self.supply_ma = self.full_ma
        self.limit_ma = self.floor_ma
        self.flags = 0
        self._logged = 0
        self._passes = 0
        governor.set_cap_ma(self.limit_ma)

    async def run(self):
        ms = hal.ticks_ms
        diff = hal.ticks_diff
        due = ms()
        while True:
            now = ms()
            if self.temperature_due(now):  # once a second: only then a coroutine is made
                await self.read_temperature(now)
            self.update(now)
            due = hal.ticks_add(due, _PASS_MS)
            wait = diff(due, ms())
            if wait > 0:
                await asyncio.sleep_ms(wait)
            else:
                due = ms()  # fell behind: no burst

    async def step(self, now_ms):
        """One pass at pod time now_ms, as run() makes one every _PASS_MS."""
        if self.temperature_due(now_ms):
            await self.read_temperature(now_ms)
        self.update(now_ms)

    def temperature_due(self, now_ms):
        """True when no conversion runs or the running one has had its 750 ms."""
        return not self._converting or hal.ticks_diff(now_ms, self._conv_ms) >= _CONVERT_MS

    async def read_temperature(self, now_ms):
        """Read the finished conversion (if one ran), then start the next."""
        th = self.thermometer
        if self._converting:
            t = await th.read_c16()
            self._tried = True
            if t is not None:
                self.temp_c16 = t
                self._good_ms = now_ms
                self._have = True
        self._converting = await th.convert()
        self._conv_ms = now_ms
        if not self._converting:
            self._tried = True  # nothing answered the bus

    def update(self, now_ms):
        """Read VIN, set the governor's cap, report. No allocation (a LOG line aside)."""
        flags = self._thermal(now_ms) | self._supply()
        lim = self.full_ma
        if self.thermal_ma < lim:
            lim = self.thermal_ma
        if self.supply_ma < lim:
            lim = self.supply_ma
        self.limit_ma = lim
        self.flags = flags
        self.governor.set_cap_ma(lim)
        new = flags & _LOUD & ~self._logged
        self._logged = flags & _LOUD
        lk = self.link
        if lk is not None:
            if new:
                lk.send_log(wire.LOG_LEVEL_WARNING, "LED power: flags 0x%02x, limit %d mA, %d/16 degC, %d mV"
                            % (flags, lim, self.temp_c16, self.vin_mv))
            self._passes += 1
            if self._passes >= _REPORT_EVERY:
                self._passes = 0
                lk.send_telemetry(wire.T_POWER, wire.pack_power(lk.body, _HDR, self.temp_c16, self.vin_mv, lim,
                                                                self.full_ma, flags))

    def _thermal(self, now_ms):
        full = self.full_ma
        floor = self.floor_ma
        flags = 0
        ma = full
        if self._have:
            t = self.temp_c16
            if t >= _OFF_C16 or (self._hot_off and t > _OFF_C16 - _OFF_HYST_C16):
                self._hot_off = True
                ma = 0
                flags = wire.POWER_FLAG_HOT_OFF | wire.POWER_FLAG_THERMAL
            else:
                self._hot_off = False
                if t >= _FULL_C16:
                    ma = floor
                elif t > _START_C16:
                    ma = full - (full - floor) * (t - _START_C16) // (_FULL_C16 - _START_C16)
                if t > _START_C16:
                    flags = wire.POWER_FLAG_THERMAL
        if not self._have or hal.ticks_diff(now_ms, self._good_ms) > _STALE_MS:
            if ma > floor:
                ma = floor  # fail safe: the floor, or darker if the last reading said so
            if self._tried:
                flags |= wire.POWER_FLAG_TEMP_FAULT
        self.thermal_ma = ma
        return flags

    def _supply(self):
        vin = self.vin
        v = 0
        for _ in range(_VIN_SAMPLES):
            x = vin.read_mv()  # a method call, not a bound method: no allocation
            if x is None:
                self.vin_mv = 0
                return wire.POWER_FLAG_VIN_FAULT  # unknown rail: no supply limit, reported
            v += x
        v //= _VIN_SAMPLES
        self.vin_mv = v
        full = self.full_ma
        ma = self.supply_ma
        if v < _UV_CUT_MV or (self._cut and v < _UV_OK_MV):
            self._cut = True
            ma = 0
        elif v < _UV_START_MV:
            est = self.governor.estimate_ma()
            low = (ma if ma < est else est) * 3 // 4
            fl = full * _UV_FLOOR_PCT // 100
            ma = low if low > fl else (fl if ma > fl else ma)
        elif v >= _UV_OK_MV:
            self._cut = False
            ma += full >> 4
            if ma > full:
                ma = full
        self.supply_ma = ma
        if self._cut:
            return wire.POWER_FLAG_VIN_CUTOFF
        return wire.POWER_FLAG_UNDERVOLT if ma < full else 0
