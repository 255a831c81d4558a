"""The effects engine: a registry of effects, each a class with a parameter schema.

@effect(id, params=...) binds a wire effect id to a class and to the schema
of its SCENE params: positional (name, unit, default, low, high). Its period
range comes from the protocol (wire.EFFECT_PERIODS, generated from
protocol/messages.py EFFECT_PERIODS, which hostd reads too). The registry is
data: check() validates any scene against it and names the failing field for
the NACK (pod/refusal.py), docs/light.md lists it, and the host only has to
know the names.

Every effect renders the whole array into the caller's preallocated frame
(count x sRGB R, G, B bytes) for a moment t_ms of its scene, on small ints
only: a float or a fresh object per frame would be garbage on the ESP32.
Per-LED loops are @micropython.viper; there x // 255 of a product of two bytes
is written (x + 1 + (x >> 8)) >> 8, the same for every 0 <= x < 65535, because
viper's // is a call into the runtime each time. Lifecycle: __init__(n, inputs)
once per scene (allocate here), start(scene) when it begins, apply(scene) when
the same effect gets new parameters (phase kept), render(t_ms, out), stop().
"""
import micropython
from micropython import const

from pod import palette, refusal, wire

STROBE_MIN_MS = wire.EFFECT_PERIODS[wire.EFFECT_STROBE][0]  # 13 Hz
STROBE_MAX_MS = wire.EFFECT_PERIODS[wire.EFFECT_STROBE][1]  # 8 Hz
_N_PALETTES = len(wire.PALETTE)


def _table(fn):
    t = bytearray(256)
    for i in range(256):
        t[i] = fn(i)
    return t


def _breath(i):
    # one breath from dark through full (step 128) back to dark; smoothstep falloff
    d = i - 128 if i >= 128 else 128 - i
    return (2097152 - 384 * d * d + 2 * d * d * d) * 255 // 2097152


def _sin(i):
    import math  # import time only

    return int(127.5 + 127.5 * math.sin(i * 2 * math.pi / 256))


BREATH = _table(_breath)
SIN = _table(_sin)


class Inputs:
    """Live values effects may follow: set by the link and the EEG side, read per frame."""

    def __init__(self):
        self.alpha = 0  # 0..255: the pod's relative alpha power (alpha_bloom)
        self.group = 0  # 0..65535: the circle's group value (circle)


class Spec:
    def __init__(self, eid, cls, params, period, uses_palette, strobe):
        self.id = eid
        self.name = None
        self.cls = cls
        self.params = params  # ((name, unit, default, low, high), ...)
        self.period = period  # (low, high, default) ms (wire.EFFECT_PERIODS), or None if it has no period
        self.palette = uses_palette
        self.strobe = strobe


REGISTRY = {}


def effect(eid, params=(), uses_palette=False, strobe=False):
    def bind(cls):
        spec = Spec(eid, cls, params, wire.EFFECT_PERIODS.get(eid), uses_palette, strobe)
        for name, value in wire.EFFECT.items():
            if value == eid:
                spec.name = name
        REGISTRY[eid] = spec
        cls.spec = spec
        return cls

    return bind


def check(scene, base=0):
    """0 if the scene (a wire.Scene) is well formed, else the wire.NACK_REASON_* why not,
    with the failing field named (pod/refusal.py): its index in SCENE, plus base (SCENE_AT's
    scene fields start one further).

    Safety (strobe permission) is the governor's call, not this one's.
    """
    spec = REGISTRY.get(scene.effect)
    params = scene.params
    if spec is None:
        return refusal.field(wire.NACK_REASON_UNKNOWN_EFFECT, wire.F_SCENE_EFFECT + base, 0, _MAX_EFFECT)
    sp = spec.params
    if len(params) > len(sp):  # the range of a list without an item: how many it may hold
        return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_SCENE_PARAMS + base, 0, len(sp))
    for i in range(len(params)):
        p = sp[i]
        if not p[3] <= params[i] <= p[4]:
            return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_SCENE_PARAMS + base, p[3], p[4], i)
    per = spec.period
    if per is not None and not per[0] <= scene.period_ms <= per[1]:
        return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_SCENE_PERIOD_MS + base, per[0], per[1])
    if spec.palette and scene.palette not in palette.STOPS:
        return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_SCENE_PALETTE + base, 0, _N_PALETTES - 1)
    return 0


class Effect:
    spec = None

    def __init__(self, n, inputs):
        self.n = n
        self.inputs = inputs
        self.color = bytearray(3)
        self.period_ms = 1000
        self.p = [0] * 8  # params with defaults filled in
        self.pal = None

    def start(self, scene):
        self.apply(scene)

    def apply(self, scene):
        c = scene.color
        self.color[0] = c[0]
        self.color[1] = c[1]
        self.color[2] = c[2]
        self.period_ms = scene.period_ms if scene.period_ms > 0 else 1000
        sp = self.spec.params
        for i in range(len(sp)):
            self.p[i] = scene.params[i] if i < len(scene.params) else sp[i][2]
        if self.spec.palette:
            if self.pal is None:
                self.pal = bytearray(palette.SIZE)
            palette.expand(scene.palette, self.pal)

    def stop(self):
        pass

    def render(self, t_ms, out):
        raise NotImplementedError

    def phase(self, t_ms, period):
        """0..4095 position of t_ms in a period (intermediates stay small ints)."""
        return (t_ms % period) * 4096 // period


# -- viper helpers ------------------------------------------------------------
@micropython.viper
def fill(out, n: int, r: int, g: int, b: int):
    p = ptr8(out)
    i = 0
    m = n * 3
    while i < m:
        p[i] = r
        p[i + 1] = g
        p[i + 2] = b
        i += 3


@micropython.viper
def scale(out, n: int, level: int):
    """Every byte times level/255 (level 0..255), rounded."""
    p = ptr8(out)
    i = 0
    while i < n:
        x = int(p[i]) * level + 127
        p[i] = (x + 1 + (x >> 8)) >> 8  # x // 255
        i += 1


@micropython.viper
def _wave(out, n: int, color, sin, ph: int, step: int, floor: int):
    # level of LED i: floor + (255 - floor) * sin(ph + i * step), phases in 1/256 of a turn x 16
    p = ptr8(out)
    c = ptr8(color)
    c0 = int(c[0])
    c1 = int(c[1])
    c2 = int(c[2])
    s = ptr8(sin)
    i = 0
    while i < n:
        v = int(s[((ph + i * step) >> 4) & 255])
        x = (255 - floor) * v
        lv = floor + ((x + 1 + (x >> 8)) >> 8)  # x // 255
        j = i * 3
        x = c0 * lv
        p[j] = (x + 1 + (x >> 8)) >> 8  # x // 255
        x = c1 * lv
        p[j + 1] = (x + 1 + (x >> 8)) >> 8
        x = c2 * lv
        p[j + 2] = (x + 1 + (x >> 8)) >> 8
        i += 1


@micropython.viper
def _aurora(out, n: int, pal, sin, ph1: int, ph2: int, ph3: int, k: int):
    p = ptr8(out)
    q = ptr8(pal)
    s = ptr8(sin)
    i = 0
    while i < n:
        x = i * k
        idx = (int(s[(x + ph1) & 255]) + int(s[(x * 2 - ph2) & 255])) >> 1
        lv = 40 + (int(s[(x * 3 + ph3) & 255]) * 215 >> 8)
        j = i * 3
        e = idx * 3
        p[j] = q[e] * lv >> 8
        p[j + 1] = q[e + 1] * lv >> 8
        p[j + 2] = q[e + 2] * lv >> 8
        i += 1


@micropython.viper
def _drift(out, n: int, pal, ph: int, span: int):
    # palette index of LED i: ph + i * span / n (span in palette steps across the array)
    p = ptr8(out)
    q = ptr8(pal)
    i = 0
    while i < n:
        idx = (ph + i * span // n) & 255
        j = i * 3
        e = idx * 3
        p[j] = q[e]
        p[j + 1] = q[e + 1]
        p[j + 2] = q[e + 2]
        i += 1


@micropython.viper
def _lcg(state) -> int:
    # 16-bit linear congruential step (products stay below 2**31 on a 32-bit port)
    s = ptr16(state)
    x = (int(s[0]) * 25173 + 13849) & 0xFFFF
    s[0] = x
    return x >> 8


@micropython.viper
def _candle(out, n: int, color, cur, tgt, state, depth: int):
    # each LED eases toward its own flicker target; new targets now and then
    p = ptr8(out)
    c = ptr8(color)
    c0 = int(c[0])
    c1 = int(c[1])
    c2 = int(c[2])
    a = ptr8(cur)
    b = ptr8(tgt)
    s = ptr16(state)
    i = 0
    while i < n:
        x = (int(s[0]) * 25173 + 13849) & 0xFFFF
        s[0] = x
        r = x >> 8
        if r < 24:
            b[i] = 255 - (depth * ((x >> 2) & 255) >> 8)
        a[i] = (int(a[i]) * 3 + int(b[i]) + 2) >> 2
        lv = int(a[i])
        j = i * 3
        x = c0 * lv
        p[j] = (x + 1 + (x >> 8)) >> 8  # x // 255
        x = c1 * lv
        p[j + 1] = (x + 1 + (x >> 8)) >> 8
        x = c2 * lv
        p[j + 2] = (x + 1 + (x >> 8)) >> 8
        i += 1


@micropython.viper
def _stars(out, n: int, color, age, state, bg: int, chance: int, life: int, breath):
    # age[i] == 0: idle background; else the star's step through one breath
    p = ptr8(out)
    c = ptr8(color)
    c0 = int(c[0])
    c1 = int(c[1])
    c2 = int(c[2])
    a = ptr8(age)
    s = ptr16(state)
    br = ptr8(breath)
    i = 0
    while i < n:
        g = int(a[i])
        if g == 0:
            x = (int(s[0]) * 25173 + 13849) & 0xFFFF
            s[0] = x
            if (x >> 4) < chance:
                g = 1
        else:
            g += life
            if g > 255:
                g = 0
        a[i] = g
        lv = bg
        if g:
            lv = bg + ((255 - bg) * int(br[g]) >> 8)
        j = i * 3
        x = c0 * lv
        p[j] = (x + 1 + (x >> 8)) >> 8  # x // 255
        x = c1 * lv
        p[j + 1] = (x + 1 + (x >> 8)) >> 8
        x = c2 * lv
        p[j + 2] = (x + 1 + (x >> 8)) >> 8
        i += 1


@micropython.viper
def _tide(out, n: int, color, level: int, edge: int):
    # LEDs below the water line lit; a soft edge of `edge` LEDs (positions x 256)
    p = ptr8(out)
    c = ptr8(color)
    c0 = int(c[0])
    c1 = int(c[1])
    c2 = int(c[2])
    i = 0
    while i < n:
        d = level - i * 256
        if d >= edge:
            lv = 255
        elif d <= 0:
            lv = 12
        else:
            lv = 12 + 243 * d // edge
        j = i * 3
        x = c0 * lv
        p[j] = (x + 1 + (x >> 8)) >> 8  # x // 255
        x = c1 * lv
        p[j + 1] = (x + 1 + (x >> 8)) >> 8
        x = c2 * lv
        p[j + 2] = (x + 1 + (x >> 8)) >> 8
        i += 1


@micropython.viper
def _rings(out, n: int, pal, centers, radii, strength, width: int):
    # up to 4 rings: brightness falls off with distance from each ring's radius
    p = ptr8(out)
    q = ptr8(pal)
    ce = ptr16(centers)
    ra = ptr16(radii)
    st = ptr8(strength)
    i = 0
    while i < n:
        best = 0
        col = 0
        k = 0
        while k < 4:
            sk = int(st[k])
            if sk:
                d = i * 256 - int(ce[k])
                if d < 0:
                    d = -d
                d = d - int(ra[k])
                if d < 0:
                    d = -d
                if d < width:
                    v = sk * (width - d) // width
                    if v > best:
                        best = v
                        col = 64 * k + 40
            k += 1
        j = i * 3
        e = col * 3
        x = best * 235
        lv = 20 + ((x + 1 + (x >> 8)) >> 8)  # x // 255
        p[j] = q[e] * lv >> 8
        p[j + 1] = q[e + 1] * lv >> 8
        p[j + 2] = q[e + 2] * lv >> 8
        i += 1


@micropython.viper
def _bloom(out, n: int, pal, level: int):
    # light spreads from the middle with level (0..255); colour from the palette
    p = ptr8(out)
    q = ptr8(pal)
    half = (n * 256) >> 1
    reach = half * level // 255 + 128
    gain = 64 + level * 3 // 4
    e = (level * 3 // 4 + 32) * 3
    i = 0
    while i < n:
        d = i * 256 + 128 - half
        if d < 0:
            d = -d
        lv = 16
        if d < reach:
            lv = 16 + 239 * (reach - d) // reach
        lv = lv * gain // 255
        j = i * 3
        p[j] = q[e] * lv // 255
        p[j + 1] = q[e + 1] * lv // 255
        p[j + 2] = q[e + 2] * lv // 255
        i += 1


# -- the effects -------------------------------------------------------------
@effect(wire.EFFECT_OFF)
class Off(Effect):
    def render(self, t_ms, out):
        fill(out, self.n, 0, 0, 0)


@effect(wire.EFFECT_SOLID)
class Solid(Effect):
    def render(self, t_ms, out):
        c = self.color
        fill(out, self.n, c[0], c[1], c[2])


@effect(wire.EFFECT_BREATHE)
class Breathe(Effect):
    def render(self, t_ms, out):
        lv = BREATH[self.phase(t_ms, self.period_ms) >> 4]
        c = self.color
        fill(out, self.n, c[0] * lv // 255, c[1] * lv // 255, c[2] * lv // 255)


@effect(
    wire.EFFECT_SLOW_WAVE,
    params=(("wavelength", "leds", 30, 2, 1000), ("floor", "1/255", 40, 0, 255)),
)
class SlowWave(Effect):
    def render(self, t_ms, out):
        step = 4096 // self.p[0]
        _wave(out, self.n, self.color, SIN, self.phase(t_ms, self.period_ms), step, self.p[1])


@effect(wire.EFFECT_AURORA, params=(("scale", "1/256 turn per led", 9, 1, 64),), uses_palette=True)
class Aurora(Effect):
    def render(self, t_ms, out):
        per = self.period_ms
        ph = self.phase(t_ms, per) >> 4
        ph2 = self.phase(t_ms, per + per // 3) >> 4
        ph3 = self.phase(t_ms, per * 2) >> 4
        _aurora(out, self.n, self.pal, SIN, ph, ph2, ph3, self.p[0])


@effect(wire.EFFECT_CANDLE, params=(("depth", "1/255", 70, 0, 160),))
class Candle(Effect):
    def __init__(self, n, inputs):
        super().__init__(n, inputs)
        self.cur = bytearray(b"\xff" * n)
        self.tgt = bytearray(b"\xff" * n)
        self.rng = bytearray(b"\x2a\x17")  # u16 state for ptr16

    def render(self, t_ms, out):
        _candle(out, self.n, self.color, self.cur, self.tgt, self.rng, self.p[0])


@effect(
    wire.EFFECT_RIPPLE,
    params=(("speed", "leds/s", 6, 1, 60), ("width", "leds", 3, 1, 30)),
    uses_palette=True,
)
class Ripple(Effect):
    def __init__(self, n, inputs):
        super().__init__(n, inputs)
        self.centers = bytearray(8)  # u16 x 4, positions x 256
        self.radii = bytearray(8)
        self.strength = bytearray(4)
        self.born = [-1, -1, -1, -1]  # scene ms when each ring started; -1 = none
        self.rng = bytearray(b"\x51\x03")
        self.next = 0
        self.k = 0

    def render(self, t_ms, out):
        if t_ms >= self.next or t_ms < self.next - self.period_ms:
            k = self.k
            c = _lcg(self.rng) * self.n  # 0..255 of the array, x 256 positions
            self.centers[2 * k] = c & 0xFF
            self.centers[2 * k + 1] = (c >> 8) & 0xFF
            self.born[k] = t_ms
            self.k = (k + 1) & 3
            self.next = t_ms + self.period_ms
        life = 4 * self.period_ms
        for k in range(4):
            age = t_ms - self.born[k]
            if self.born[k] < 0 or age < 0 or age >= life:
                self.strength[k] = 0
                continue
            r = age * self.p[0] * 32 // 125  # leds x 256 (small ints on the board)
            if r > 65535:
                r = 65535
            self.radii[2 * k] = r & 0xFF
            self.radii[2 * k + 1] = r >> 8
            self.strength[k] = 255 - age * 255 // life
        _rings(out, self.n, self.pal, self.centers, self.radii, self.strength, self.p[1] * 256)


@effect(wire.EFFECT_PALETTE_DRIFT, params=(("span", "palette steps", 128, 0, 1024),), uses_palette=True)
class PaletteDrift(Effect):
    def render(self, t_ms, out):
        _drift(out, self.n, self.pal, self.phase(t_ms, self.period_ms) >> 4, self.p[0])


@effect(
    wire.EFFECT_STARFIELD,
    params=(("background", "1/255", 24, 0, 128), ("density", "1/4096 per frame", 12, 1, 400), ("twinkle", "steps per frame", 3, 1, 16)),
)
class Starfield(Effect):
    def __init__(self, n, inputs):
        super().__init__(n, inputs)
        self.age = bytearray(n)
        self.rng = bytearray(b"\x33\x7a")

    def render(self, t_ms, out):
        p = self.p
        _stars(out, self.n, self.color, self.age, self.rng, p[0], p[1], p[2], BREATH)


@effect(wire.EFFECT_TIDE, params=(("edge", "leds", 4, 1, 100),))
class Tide(Effect):
    def render(self, t_ms, out):
        lv = BREATH[self.phase(t_ms, self.period_ms) >> 4]
        top = self.n * 256 + self.p[0] * 256
        _tide(out, self.n, self.color, top * lv // 255, self.p[0] * 256)


@effect(wire.EFFECT_HEARTBEAT, params=(("floor", "1/255", 30, 0, 200),))
class Heartbeat(Effect):
    def render(self, t_ms, out):
        ph = self.phase(t_ms, self.period_ms)  # 0..4095
        # lub at 0, dub at 0.28 of the beat, each a short breath (the dub softer)
        lv = 0
        if ph < 900:
            lv = BREATH[ph * 255 // 900]
        elif 1150 <= ph < 2050:
            lv = BREATH[(ph - 1150) * 255 // 900] * 180 // 255
        f = self.p[0]
        lv = f + (255 - f) * lv // 255
        c = self.color
        fill(out, self.n, c[0] * lv // 255, c[1] * lv // 255, c[2] * lv // 255)


@effect(wire.EFFECT_ALPHA_BLOOM, params=(("smoothing", "frames", 30, 1, 600),), uses_palette=True)
class AlphaBloom(Effect):
    def __init__(self, n, inputs):
        super().__init__(n, inputs)
        self.level256 = 0  # smoothed alpha x 256

    def render(self, t_ms, out):
        target = self.inputs.alpha * 256
        self.level256 += (target - self.level256) // self.p[0]
        _bloom(out, self.n, self.pal, self.level256 >> 8)


@effect(wire.EFFECT_CIRCLE, params=(("smoothing", "frames", 8, 1, 600),), uses_palette=True)
class Circle(Effect):
    def __init__(self, n, inputs):
        super().__init__(n, inputs)
        self.level = 0  # smoothed group value >> 4 (0..4095)

    def render(self, t_ms, out):
        target = self.inputs.group >> 4
        self.level += (target - self.level) // self.p[0]
        lv = self.level >> 4
        pal = self.pal
        e = lv * 3
        fill(out, self.n, pal[e] * lv // 255, pal[e + 1] * lv // 255, pal[e + 2] * lv // 255)


@effect(wire.EFFECT_STROBE, strobe=True)
class Strobe(Effect):
    def render(self, t_ms, out):
        if self.phase(t_ms, self.period_ms) < 2048:
            c = self.color
            fill(out, self.n, c[0], c[1], c[2])
        else:
            fill(out, self.n, 0, 0, 0)


_MAX_EFFECT = max(REGISTRY)  # the highest effect id this pod knows (unknown_effect's range)
