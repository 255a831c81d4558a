"""Per-sample alpha tracker: the wearer's relative alpha amplitude, 0..255, for alpha_bloom.

The Cyton parser calls the tracker (its ``tap``) with every sample as it is
copied into the batch, so the light follows the newest sample, not a 4 Hz
band-power update over a 1 s window. The band powers (bands.py) stay
telemetry only.

Per sample, integers only (@micropython.viper: no float, no allocation):

1. Channel mean: the channels' raw 24-bit counts summed and divided by the
   channel count (one signal: alpha is spread over the head, and the mean
   keeps the per-sample cost to one pass over the bytes).
2. DC removed by a one-pole high-pass, cutoff ~0.6 Hz (time constant 2**kd
   samples, 64 at 250 Hz, 32 at 125 Hz), state in counts x 2**kd. The
   filter starts at the first sample's value, so an electrode's offset does
   not ring through at start-up. The result in units of 16 counts (0.36 uV at
   gain 24), clamped to 16 bits (+-11.7 mV).
3. Complex demodulation at 10 Hz: the sample times cos and sin tables (Q14)
   of length L = rate // gcd(rate, 10), the shortest run of whole 10 Hz
   periods (25 samples at 250 Hz: 1 period, 0.1 s; 25 at 125 Hz: 2 periods,
   0.2 s). Each product is averaged over exactly L samples, a running sum over
   a ring (the ring index is the table index). A boxcar of whole 10 Hz
   periods nulls the 2 x 10 Hz product term exactly, so a steady rhythm gives
   a steady value (no ripple), and a new sample moves the sum at once: a
   burst of 10 Hz adds A/L x cos**2 per sample in its own direction, so the
   amplitude grows about linearly until the ring is full (0.1 s at 250 Hz).
   Two things can make it wobble for the first samples of a burst: the
   2 x 10 Hz term's partial sum before the ring is full, and a rhythm
   already there in opposite phase (which the burst first cancels: the 10 Hz
   content really drops). A strong burst outgrows both within a few samples.
   Pass band (power -3 dB) 10 +- 4.4 Hz at 250 Hz, 10 +- 2.2 Hz at 125 Hz;
   the first nulls at 10 +- 10 Hz (+- 5 Hz at 125 Hz), sidelobes -13 dB.
4. Alpha mean square = 2 (I**2 + Q**2) (A**2 / 2 for a 10 Hz wave of
   amplitude A); total = a slow one-pole mean of x**2 (2**kt samples, ~2 s);
   output = 255 x sqrt(alpha / total), clamped to 0..255: the alpha
   amplitude relative to the signal's, which follows the boxcar's linear
   rise (a power ratio would follow its square, barely moving on the first
   frame of a burst). The total is slow on purpose: a burst of alpha shows
   at once and the ratio follows the alpha's rise (a fast total would rise
   with the burst and make the ratio dip first).

Beyond a plain one-pole mean square, the total:

* starts as a running mean (gain 1/2**m, m = floor(log2(samples)), until
  m reaches kt), so it is right after the first samples instead of rising
  from 0 over seconds (which would hold the light at full for several
  seconds after the headset starts);
* takes each x**2 clipped to 16 x the current total (4 standard deviations
  of a Gaussian signal: no measurable change to EEG's mean square, and a
  sine never reaches 2x). Without the clip one electrode pop or blink of a
  few mV would multiply the total a thousandfold and darken the light for
  tens of seconds; with it, the total grows at most ~3 % per sample, still
  reaching a real level change in a fraction of a second;
* is kept exactly as a leaky sum P_s = total x 2**kt in two words (high and
  low 16 bits), so there is no truncation bias however small the signal.

32-bit words: the ESP32's viper ints are 32-bit (the unix port's 64-bit,
where ptr32 loads zero-extend: every signed load is sign-extended with
``(v << sx) >> sx``, sx 32 there and 0 on the ESP32). Bounds, all < 2**31:

* channel sum <= 16 x 2**23 = 2**27; mean |v| <= 2**23;
* DC state |dcs| <= 2**(23 + kd) + 2**kd <= 2**30 + 2**7 (kd <= 7);
  |v - dc| <= 2**24 + 1;
* |x| <= 32767, |x x table| <= 32767 x 16384 < 2**29; a ring product is
  that >> (14 - g), <= 2**(15 + g); the ring sums are <= L x 2**(15 + g),
  g chosen at construction as the largest with L x 2**(15 + g) < 2**31
  (g = 11 for L = 25); the sum is updated by (new - old), <= 2**(16 + g);
* I, Q = sums // L; both shifted right by e until the larger magnitude is
  < 2**14 (a negative one floors to at most 2**14), so
  alpha = 2 (I**2 + Q**2) <= 2**30;
* x**2 < 2**30; the clipped value 16 x total is only formed when
  total < x**2 / 16 < 2**26; total <= 2**30; P_s <= 2**(30 + kt) + 2**kt
  is held as hi (<= 2**(14 + kt) + 1, kt <= 10) and lo (< 2**16); an
  update adds (delta >> 16) << w to hi and (delta & 0xFFFF) << w to lo,
  |delta| <= 2**30, w <= kt: both < 2**27;
* the ratio: alpha and total are each brought to one word < 2**30 with an
  exponent, aligned by right shifts, and both are then halved until total < 2**15, so 65025 x alpha < 2**31, and the
  square root is taken bit by bit (8 steps).
"""
import array
import math

import micropython
from micropython import const

from pod.fixfft import SX

ALPHA_HZ = const(10)
MAX_LENGTH = const(256)  # ring samples: 4 arrays of L words
MIN_RATE_HZ = const(25)  # 10 Hz well below Nyquist
_Q14 = 16384.0
_DC_TAU_CYCLES = 3.14159  # 2**kd ~ rate / pi: one-pole cutoff ~0.5 Hz
_TOTAL_S = 2  # 2**kt ~ rate x 2 s
_MAX_KD = const(7)
_MAX_KT = const(10)
_UV_PER_COUNT = 4500000.0 / 8388607.0  # at gain 1
_X_COUNTS = const(16)  # one unit of x

# state array slots
_N = const(0)  # samples seen, saturating at 2**kt
_J = const(1)  # ring and table index
_DC = const(2)  # DC leaky sum, counts x 2**kd
_SI = const(3)  # ring sums
_SQ = const(4)
_PHI = const(5)  # total leaky sum, high part (bits 16 and up)
_PLO = const(6)  # ... low 16 bits
_OUT = const(7)  # last output, 0..255
_NCH = const(8)  # constants from here
_LEN = const(9)
_KD = const(10)
_KT = const(11)
_G = const(12)
_SX = const(13)
_SLOTS = const(14)


@micropython.viper
def _track(st, buf, off: int, tab, ring) -> int:
    s = ptr32(st)
    d = ptr8(buf)
    t = ptr32(tab)
    r = ptr32(ring)
    sx = s[_SX]
    nch = s[_NCH]
    length = s[_LEN]
    kd = s[_KD]
    kt = s[_KT]
    g = s[_G]
    n = s[_N]
    # 1. channel mean in counts: sum <= 16 x 2**23
    acc = 0
    p = off
    end = off + nch * 3
    while p < end:
        v = (d[p] << 16) | (d[p + 1] << 8) | d[p + 2]
        if v & 0x800000:
            v -= 0x1000000
        acc += v
        p += 3
    v = acc // nch
    # 2. DC: leaky sum dcs = dc x 2**kd, started at the first sample; x = v - the dc before it
    if n == 0:
        dcs = v << kd
    else:
        dcs = (s[_DC] << sx) >> sx
    dc = dcs >> kd
    s[_DC] = dcs + v - dc
    x = (v - dc + 8) >> 4  # units of 16 counts
    if x > 32767:
        x = 32767
    elif x < -32767:
        x = -32767
    # 3. demodulation: products into the ring, running sums over it
    j = s[_J]
    sh = 14 - g
    rnd = (1 << sh) >> 1
    pi = (x * ((t[j] << sx) >> sx) + rnd) >> sh
    pq = (x * ((t[length + j] << sx) >> sx) + rnd) >> sh
    si = ((s[_SI] << sx) >> sx) + (pi - ((r[j] << sx) >> sx))
    sq = ((s[_SQ] << sx) >> sx) + (pq - ((r[length + j] << sx) >> sx))
    r[j] = pi
    r[length + j] = pq
    s[_SI] = si
    s[_SQ] = sq
    j += 1
    if j == length:
        j = 0
    s[_J] = j
    # 4a. alpha = 2 (I**2 + Q**2), I and Q halved until below 2**14; units (x 2**(g - e))**2
    ii = si // length
    qq = sq // length
    big = ii if ii >= 0 else 0 - ii
    aq = qq if qq >= 0 else 0 - qq
    if aq > big:
        big = aq
    e = 0
    while big >= 16384:
        big >>= 1
        e += 1
    ii >>= e
    qq >>= e
    alpha = 2 * (ii * ii + qq * qq)
    ea = 2 * (g - e)  # alpha in x**2 is alpha / 2**ea
    # 4b. total: leaky sum P_s = total x 2**kt in hi, lo
    x2 = x * x
    hi = s[_PHI]
    lo = s[_PLO]
    tot = (hi << (16 - kt)) + (lo >> kt)
    if tot > 0 and (x2 >> 4) > tot:
        x2 = tot << 4
    m = kt
    if n < (1 << kt):
        n += 1
        s[_N] = n
        m = 0
        while (n >> (m + 1)) > 0:
            m += 1  # floor(log2(n)): a running mean while warming up
    delta = x2 - tot
    w = kt - m
    hi += (delta >> 16) << w
    lo += (delta & 0xFFFF) << w
    hi += lo >> 16
    lo &= 0xFFFF
    s[_PHI] = hi
    s[_PLO] = lo
    # 4c. ratio: total as one word < 2**30 with its exponent, then aligned
    if hi < 16384:
        tot = (hi << 16) | lo
        et = kt
    else:
        k = 0
        while (hi >> k) >= 16384:
            k += 1
        tot = (hi << (16 - k)) + (lo >> k)
        et = kt - k
    if ea > et:
        k = ea - et
        alpha = alpha >> k if k < 31 else 0
    elif et > ea:
        k = et - ea
        tot = tot >> k if k < 31 else 0
    if tot <= 0:
        out = 0
    elif alpha >= tot:
        out = 255
    else:
        while tot >= 32768:
            tot >>= 1
            alpha >>= 1
        # 255 x sqrt(alpha / total): 65025 x alpha < 65025 x 2**15 < 2**31
        r2 = 65025 * alpha // tot if tot > 0 else 0
        out = 0
        bit = 128
        while bit:
            c = out + bit
            if c * c <= r2:
                out = c
            bit >>= 1
    s[_OUT] = out
    return out


def _log2_round(v):
    k = 0
    while (1 << (k + 1)) <= v * 1.4142:
        k += 1
    return k


class Tracker:
    """tracker(buf, off): one sample of `channels` 24-bit big-endian counts at buf[off:];
    sets inputs.alpha (0..255) if inputs is given, and self.value."""

    def __init__(self, channels, rate_hz, inputs=None, gain=24):
        if rate_hz < MIN_RATE_HZ:
            raise ValueError("alpha tracker: %d Hz is too slow for 10 Hz" % rate_hz)
        if not 1 <= channels <= 16:
            raise ValueError("alpha tracker: %d channels" % channels)
        length = _length(rate_hz)
        if length > MAX_LENGTH:
            raise ValueError("alpha tracker: %d Hz needs a ring of %d samples" % (rate_hz, length))
        g = 14
        while length * (1 << (15 + g)) >= 2147483648:
            g -= 1
        self.rate = rate_hz
        self.channels = channels
        self.length = length
        self.guard = g
        self.dc_shift = min(_MAX_KD, _log2_round(rate_hz / _DC_TAU_CYCLES))
        self.total_shift = min(_MAX_KT, _log2_round(rate_hz * _TOTAL_S))
        self.uv_per_x = _UV_PER_COUNT * _X_COUNTS / gain
        self.inputs = inputs
        self.value = 0
        tab = array.array("i", bytes(8 * length))
        w = 2 * math.pi * ALPHA_HZ / rate_hz
        for i in range(length):
            tab[i] = int(round(_Q14 * math.cos(w * i)))
            tab[length + i] = int(round(-_Q14 * math.sin(w * i)))
        self.tab = tab
        self.ring = array.array("i", bytes(8 * length))
        st = array.array("i", bytes(4 * _SLOTS))
        st[_NCH] = channels
        st[_LEN] = length
        st[_KD] = self.dc_shift
        st[_KT] = self.total_shift
        st[_G] = g
        st[_SX] = SX
        self.state = st

    def reset(self):
        """Forget the signal: the next sample starts afresh (DC, ring, total)."""
        st = self.state
        for i in range(_NCH):
            st[i] = 0
        ring = self.ring
        for i in range(len(ring)):
            ring[i] = 0
        self.value = 0

    def __call__(self, buf, off):
        v = _track(self.state, buf, off, self.tab, self.ring)
        self.value = v
        inputs = self.inputs
        if inputs is not None:
            inputs.alpha = v

    # -- diagnostics (floats: not for the sample path) ---------------------
    def alpha_uv2(self):
        """Mean square of the 10 Hz band now, uV**2."""
        st = self.state
        n = self.length
        scale = self.uv_per_x / (1 << self.guard)
        i = st[_SI] / n * scale
        q = st[_SQ] / n * scale
        return 2 * (i * i + q * q)

    def total_uv2(self):
        """The slow mean square of the signal now, uV**2."""
        st = self.state
        ps = st[_PHI] * 65536.0 + st[_PLO]
        u = self.uv_per_x
        return ps / (1 << self.total_shift) * u * u


def _length(rate_hz):
    a, b = rate_hz, ALPHA_HZ
    while b:
        a, b = b, a % b
    return rate_hz // a
