"""The safety governor: every frame passes it between the effects engine and the LEDs.

No command reaches the LEDs except through govern(), which enforces, in order:

1. night limits (by command or schedule): caps on blue and green, the
   melanopically effective channels, and a lower brightness cap;
2. the brightness cap from pod.json;
3. the power limit: estimated current = idle mA per LED + duty x mA per
   channel at full, kept under psu_ma - board_reserve_ma by scaling the frame
   (an automatic brightness limiter); duties are ledwire.DUTY, what the
   driver really sends;
4. the flash limit, as a slew limit per LED in linear light. WCAG 2.x counts a
   general flash as a pair of opposing changes of >= 0.1 in relative luminance
   (darker state < 0.8) and a red flash as a pair of opposing transitions
   involving saturated red (R/(R+G+B) >= 0.8, change in (R-G-B) x 320 > 20,
   i.e. in R-G-B > 1/16, linear values). Each LED spends "credit" that
   accrues with time: its luminance may move by at most 0.1 x 0.85 per 200 ms
   and, in steps where R-G-B > 0 at either end, its channels by 1/16 x 0.85
   per 200 ms (summed |change|, which bounds the change of R-G-B), plus a
   small carried credit; a step that overspends (rounding) waits it off. So any transition of a flash size lasts >= ~235 ms
   and no 1-s window holds more than 6 of them (3 flashes), for one LED or any
   average of LEDs (an average changes no faster than its parts). This holds
   whatever the effects do, so it needs no list of "dangerous" effects.

Strobe scenes (allowed only with pod.json strobe_enabled and the command's
opt-in; the renderer checks) lift the general-flash slew only; the red limit,
power, brightness and night caps stay.

Stop (FADE_SAFE, govern(..., fast=True)): the strip fades to a constant dim
glow. Each LED moves on a straight line in linear light toward it, so its
luminance and its max(0, R-G-B) change monotonically: the whole fade is one
transition of each kind, never a flash. It moves _FAST times as fast as the
slew allows, and is charged the exact change of max(0, R-G-B) rather than the
bound above (a white LED fading to the warm glow barely changes it), so any
frame reaches the glow in ~1.3 s at most (a full red). What it takes beyond
its credit is left as debt: the LED cannot move again until time has paid it
back, so over any stretch of time an LED changes no more than the slew allows
plus its one fade in progress, and the flash limits above still hold.

All per-LED work is @micropython.viper over preallocated buffers.
"""
import micropython
from micropython import const

from pod import ledwire
from pod.mem import copy as _copy

# Credits in linear-light units (0..65535 = 0..1) x 16, per ms.
_RATE_L = const(445)  # 0.1 x 0.85 / 200 ms luminance: 6553.5 x 0.85 / 200 x 16
_RATE_R = const(278)  # 1/16 x 0.85 / 200 ms of R-G-B: 4096 x 0.85 / 200 x 16
_CAP = const(20970)  # carried credit: 0.02 (above one byte step at the top of the scale)
_FREE = const(1 << 28)  # luminance credit in a strobe scene: unlimited
_MAX_DT_MS = const(100)
_FAST = const(3)  # a stop's fade: this many times the slew's pace, the excess left as debt
_DEBT_MIN = const(-(1 << 27))  # credits never fall below this (a full swing costs ~2**20)
MODE_SLEW = const(0)
MODE_STROBE = const(1)  # luminance unlimited
MODE_FAST = const(2)  # the stop's fade
_MASK30 = const(0x3FFFFFFF)  # stored credits: 30-bit two's complement, the same on 32- and 64-bit
_SIGN30 = const(0x20000000)
_DAY_MIN = const(1440)
_HOUR_MS = const(3600000)

NIGHT_OFF = const(0)
NIGHT_ON = const(1)
NIGHT_SCHEDULE = const(2)


def _inverse(lin):
    # _INV[i]: the largest byte whose linear value (LIN16) is <= i x 64
    inv = bytearray(1024)
    v = 0
    for i in range(1024):
        while v < 255 and (lin[2 * v + 2] | lin[2 * v + 3] << 8) <= i * 64:
            v += 1
        inv[i] = v
    return inv


_INV = _inverse(ledwire.LIN16)


@micropython.viper
def _cap_channels(buf, n: int, gmax: int, bmax: int):
    p = ptr8(buf)
    i = 0
    while i < n:
        if int(p[i + 1]) > gmax:
            p[i + 1] = gmax
        if int(p[i + 2]) > bmax:
            p[i + 2] = bmax
        i += 3


@micropython.viper
def _duty_sum(src, n: int, duty, level: int) -> int:
    # sum of driven duties if src were scaled by level / 256
    s = ptr8(src)
    g = ptr8(duty)
    t = 0
    i = 0
    while i < n:
        t += int(g[(int(s[i]) * level) >> 8])
        i += 1
    return t


@micropython.viper
def _histogram(src, n: int, hist):
    # hist[v] = how many of src[0:n] are v (hist: 256 words)
    h = ptr32(hist)
    s = ptr8(src)
    i = 0
    while i < 256:
        h[i] = 0
        i += 1
    i = 0
    while i < n:
        v = int(s[i])
        h[v] = int(h[v]) + 1
        i += 1


@micropython.viper
def _duty_sum_hist(hist, duty, level: int) -> int:
    # _duty_sum of the bytes counted in hist: 256 steps, whatever the frame's length
    h = ptr32(hist)
    g = ptr8(duty)
    t = 0
    v = 0
    while v < 256:
        c = int(h[v])
        if c:
            t += c * int(g[(v * level) >> 8])
        v += 1
    return t


@micropython.viper
def _cut_rises(shown, prev, n: int, duty, f: int, apply: int) -> int:
    # driven duties of shown if each byte that rose from prev had risen only f / 256 of
    # the way; with apply, shown is changed so
    s = ptr8(shown)
    p = ptr8(prev)
    g = ptr8(duty)
    t = 0
    i = 0
    while i < n:
        a = int(p[i])
        b = int(s[i])
        if b > a:
            b = a + (((b - a) * f) >> 8)
            if apply:
                s[i] = b
        t += int(g[b])
        i += 1
    return t


@micropython.viper
def _slew(shown, tgt, n: int, lin, cred_l, cred_r, add_l: int, add_r: int, mode: int, level: int) -> int:
    """Move each LED of shown toward tgt x level / 256 (rounded down; level 0..256) as far as
    its credits allow (mode MODE_*). Returns LEDs held back."""
    sh = ptr8(shown)
    tg = ptr8(tgt)
    t = ptr16(lin)
    inv = ptr8(_INV)
    cl = ptr32(cred_l)
    cr = ptr32(cred_r)
    held = 0
    free = mode == 1  # MODE_STROBE
    fast = mode == 2  # MODE_FAST
    extra_l = add_l * (_FAST - 1)
    extra_r = add_r * (_FAST - 1)
    i = 0
    k = 0
    while k < n:
        # credits are stored as 30-bit two's complement and sign-extended here: a ptr32
        # load zero-extends on a 64-bit port, so a raw negative credit read back huge
        a = ((int(cl[i]) ^ _SIGN30) - _SIGN30) + add_l
        if a > _CAP:
            a = _CAP
        if free:
            a = _FREE
        b = ((int(cr[i]) ^ _SIGN30) - _SIGN30) + add_r
        if b > _CAP:
            b = _CAP
        s0 = int(sh[k])
        s1 = int(sh[k + 1])
        s2 = int(sh[k + 2])
        u0 = (int(tg[k]) * level) >> 8  # the power-limited target (x 256 >> 8: unchanged)
        u1 = (int(tg[k + 1]) * level) >> 8
        u2 = (int(tg[k + 2]) * level) >> 8
        if s0 == u0 and s1 == u1 and s2 == u2:
            # already there (LIN16 is one-to-one: no linear change either): credits only
            if free:
                a = 0
            cl[i] = a & _MASK30
            cr[i] = b & _MASK30
            i += 1
            k += 3
            continue
        r0 = int(t[s0])
        g0 = int(t[s1])
        b0 = int(t[s2])
        r1 = int(t[u0])
        g1 = int(t[u1])
        b1 = int(t[u2])
        dr = r1 - r0
        dg = g1 - g0
        db = b1 - b0
        adr = dr if dr >= 0 else 0 - dr
        adg = dg if dg >= 0 else 0 - dg
        adb = db if db >= 0 else 0 - db
        tvl = ((218 * adr + 732 * adg + 74 * adb) >> 10) + 1
        # red is involved in a step if R-G-B > 0 at either end of it (else max(0, R-G-B)
        # stays 0 and cannot flash)
        red0 = r0 - g0 - b0 > 0
        tvr = 0
        m0 = 0
        if fast:
            # a stop's fade moves on a straight line (the target stands still), along which
            # max(0, R-G-B) is monotone: charged its exact change, not the bound below
            m0 = r0 - g0 - b0 if red0 else 0
            m1 = r1 - g1 - b1
            m1 = m1 if m1 > 0 else 0
            tvr = m1 - m0 if m1 >= m0 else m0 - m1
        elif red0 or r1 - g1 - b1 > 0:
            tvr = adr + adg + adb
        # what this step may spend: the credits, or in a stop's fade _FAST times the pace
        la = a
        lb = b
        if fast:
            la = (a if a > 0 else 0) + extra_l
            lb = (b if b > 0 else 0) + extra_r
        if (adr | adg | adb) == 0:
            pass
        elif tvl * 16 <= la and tvr * 16 <= lb:
            sh[k] = u0
            sh[k + 1] = u1
            sh[k + 2] = u2
            a -= tvl * 16
            b -= tvr * 16
        else:
            # fraction (1/4096) of the way the credits allow; channels rounded down
            # (a credit at or below 0 allows nothing: no division for it)
            f = 4096
            if la <= 0:
                f = 0
            elif tvl * 16 > la:
                f = la * 256 // tvl
            if f > 0 and tvr and tvr * 16 > lb:
                if lb <= 0:
                    f = 0
                else:
                    f2 = lb * 256 // tvr
                    if f2 < f:
                        f = f2
            if f > 0:
                # each channel: the largest byte whose linear value is <= the goal
                # (_INV[x >> 6] is the answer for x rounded down to 64, at most a few
                # bytes below it; a call per channel costs more than this inline)
                x = r0 + (dr * f >> 12)
                v = int(inv[x >> 6])
                while v < 255 and int(t[v + 1]) <= x:
                    v += 1
                nr = v
                x = g0 + (dg * f >> 12)
                v = int(inv[x >> 6])
                while v < 255 and int(t[v + 1]) <= x:
                    v += 1
                ng = v
                x = b0 + (db * f >> 12)
                v = int(inv[x >> 6])
                while v < 255 and int(t[v + 1]) <= x:
                    v += 1
                nb = v
                # charge what really moved (rounding down may overshoot a fall)
                xr = int(t[nr]) - r0
                xg = int(t[ng]) - g0
                xb = int(t[nb]) - b0
                xr = xr if xr >= 0 else 0 - xr
                xg = xg if xg >= 0 else 0 - xg
                xb = xb if xb >= 0 else 0 - xb
                a -= (((218 * xr + 732 * xg + 74 * xb) >> 10) + 1) * 16
                m1 = int(t[nr]) - int(t[ng]) - int(t[nb])
                if fast:
                    m1 = m1 if m1 > 0 else 0
                    b -= (m1 - m0 if m1 >= m0 else m0 - m1) * 16
                elif red0 or m1 > 0:
                    b -= (xr + xg + xb) * 16
                sh[k] = nr
                sh[k + 1] = ng
                sh[k + 2] = nb
            held += 1
        if free:
            a = 0
        if a < _DEBT_MIN:
            a = _DEBT_MIN
        if b < _DEBT_MIN:
            b = _DEBT_MIN
        cl[i] = a & _MASK30
        cr[i] = b & _MASK30
        i += 1
        k += 3
    return held


def credits(gov):
    """[luminance credits..., red credits...] of every LED, signed (a debt is negative). Diagnostics."""
    out = []
    for buf in (gov.cred_l, gov.cred_r):
        for i in range(gov.n):
            v = (buf[4 * i] | buf[4 * i + 1] << 8 | buf[4 * i + 2] << 16 | buf[4 * i + 3] << 24) & _MASK30
            out.append((v ^ _SIGN30) - _SIGN30)
    return out


class Governor:
    def __init__(self, n, cfg):
        """n LEDs; cfg carries the pod.json limits (config.Config)."""
        self.n = n
        self.nb = n * 3
        self.brightness_max = cfg.brightness_max
        self.night_brightness_max = cfg.night_brightness_max
        self.night_green_max = cfg.night_green_max
        self.night_blue_max = cfg.night_blue_max
        self.strobe_enabled = cfg.strobe_enabled
        self.led_ma = cfg.led_ma
        self.idle_ma = cfg.led_idle_ma * n
        self.budget_ma = cfg.psu_ma - cfg.board_reserve_ma
        self.cap_ma = self.budget_ma
        self.set_cap_ma(self.budget_ma)
        self.shown = bytearray(self.nb)  # what the LEDs show (boot: dark)
        self._prev = bytearray(self.nb)  # shown before this frame's slew
        self._shown_sum = 0  # driven duties of shown, or a bound above them
        self.rise_limited = 0  # frames whose rising LEDs the power limit held back
        self.cred_l = bytearray(4 * n)  # int32 per LED (ptr32)
        self.cred_r = bytearray(4 * n)
        self._hist = bytearray(4 * 256)  # a frame's byte values, counted (ptr32) for the power limit
        self._last_ms = None
        self.night_mode = NIGHT_OFF
        self._night_start = 0
        self._night_end = 0
        self._clock_min = 0  # minute of day at _clock_ms
        self._clock_ms = 0
        self.power_limited = 0  # frames scaled by the power limit
        self._limit_level = 0  # the level the last power-limited frame got (x/256)
        self.slewed = 0  # frames where the flash limit held an LED back
        self.last_held = 0

    def set_cap_ma(self, cap_ma):
        """Power limit: the lower of cap_ma (pod/derate.py: heat, supply, per output) and
        psu_ma - board_reserve_ma. 0 or less: dark. Frames reach it at the flash limit's pace."""
        if cap_ma > self.budget_ma:
            cap_ma = self.budget_ma
        self.cap_ma = cap_ma
        budget = cap_ma - self.idle_ma
        # duty units; minus one per channel for the slew's rounding (see _slew)
        smax = budget * 255 // self.led_ma - self.nb if budget > 0 else 0
        self.duty_max = smax if smax > 0 else 0
        if cap_ma <= 0:
            self.duty_max = -1  # dark: every byte to 0, not only those whose duty rounds to 0

    def estimate_ma(self):
        """Estimated current of the frame shown now (idle + driven duties), in mA."""
        return self.idle_ma + _duty_sum(self.shown, self.nb, ledwire.DUTY, 256) * self.led_ma // 255

    # -- night -----------------------------------------------------------
    def set_night(self, mode, start_min, end_min, now_min, now_ms):
        """Set night limits (mode NIGHT_*, minutes of the local day); False if out of range."""
        if mode not in (NIGHT_OFF, NIGHT_ON, NIGHT_SCHEDULE):
            return False
        if start_min >= _DAY_MIN or end_min >= _DAY_MIN or now_min >= _DAY_MIN:
            return False
        self.night_mode = mode
        self._night_start = start_min
        self._night_end = end_min
        self._clock_min = now_min
        self._clock_ms = now_ms
        return True

    def is_night(self, now_ms, diff, add):
        m = self.night_mode
        if m == NIGHT_ON:
            return True
        if m != NIGHT_SCHEDULE:
            return False
        el = diff(now_ms, self._clock_ms)
        if el >= _HOUR_MS:  # rebase: keep ticks_diff far from its range limit
            self._clock_ms = add(self._clock_ms, _HOUR_MS)
            self._clock_min = (self._clock_min + 60) % _DAY_MIN
            el -= _HOUR_MS
        now = (self._clock_min + el // 60000) % _DAY_MIN
        s = self._night_start
        e = self._night_end
        if s <= e:
            return s <= now < e
        return now >= s or now < e  # across midnight

    # -- the frame -------------------------------------------------------
    def govern(self, frame, now_ms, dt_ms, night, strobe, fast=False):
        """frame (sRGB bytes from the engine) -> self.shown, the bytes to drive.
        strobe: an allowed strobe scene; fast: the stop's fade (the module doc)."""
        nb = self.nb
        cap = self.brightness_max
        if night:
            _cap_channels(frame, nb, self.night_green_max, self.night_blue_max)
            if self.night_brightness_max < cap:
                cap = self.night_brightness_max
        level = cap + 1 if cap < 255 else 256  # x/256: 255 -> 255 at cap 255
        # driven duties are summed over the frame's histogram of byte values: one pass
        # over the frame, then 256 steps a sum, however many the power limit needs
        hist = self._hist
        duty = ledwire.DUTY
        _histogram(frame, nb, hist)
        s = _duty_sum_hist(hist, duty, level)
        if s > self.duty_max:
            self.power_limited += 1
            # the highest level whose driven duties fit. Start from the last limited frame's:
            # a scene changes little from frame to frame, so that level usually fits and one
            # more does not (two sums, not a bisection's nine)
            dmax = self.duty_max
            lo = 0
            hi = level
            g = self._limit_level
            if 0 < g < level:
                if _duty_sum_hist(hist, duty, g) <= dmax:
                    lo = g
                    if _duty_sum_hist(hist, duty, g + 1) > dmax:
                        hi = g
                else:
                    hi = g - 1
            while lo < hi:
                mid = (lo + hi + 1) >> 1
                if _duty_sum_hist(hist, duty, mid) <= dmax:
                    lo = mid
                else:
                    hi = mid - 1
            level = lo
            self._limit_level = lo
            s = _duty_sum_hist(hist, duty, lo)
        if dt_ms > _MAX_DT_MS:
            dt_ms = _MAX_DT_MS
        elif dt_ms < 0:
            dt_ms = 0
        mode = MODE_FAST if fast else (MODE_STROBE if strobe else MODE_SLEW)
        shown = self.shown
        prev = self._prev
        # The level above keeps the target within the power limit (s: its driven duties);
        # the flash limit then holds falling LEDs above their target while others rise to
        # theirs, and the sum may pass the limit. Each LED ends at most at the higher of
        # where it was and its target, so the sum is at most the last frame's plus the
        # target's: only when that passes the limit is the frame checked. Rising less is
        # always allowed (a smaller step, and the frame before was within the limit): the
        # rises are cut to the largest share that fits.
        dmax = self.duty_max
        check = dmax >= 0 and self._shown_sum + s > dmax
        if check:
            _copy(prev, 0, shown, 0, nb)
        held = _slew(shown, frame, nb, ledwire.LIN16, self.cred_l, self.cred_r,
                     _RATE_L * dt_ms, _RATE_R * dt_ms, mode, level)
        self.last_held = held
        if not held:
            self._shown_sum = s  # every LED at its target
            return shown
        self.slewed += 1
        if not check:
            self._shown_sum += s  # a bound, not the sum: the next frame may check
            return shown
        t = _duty_sum(shown, nb, duty, 256)
        if t > dmax:
            lo = 0
            hi = 255
            while lo < hi:
                mid = (lo + hi + 1) >> 1
                if _cut_rises(shown, prev, nb, duty, mid, 0) <= dmax:
                    lo = mid
                else:
                    hi = mid - 1
            t = _cut_rises(shown, prev, nb, duty, lo, 1)
            self.rise_limited += 1
        self._shown_sum = t
        return shown
