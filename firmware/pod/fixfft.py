"""Fixed-point radix-2 FFT in viper: integers only, so no float boxes per butterfly.

Floats are heap objects on the ESP32's MicroPython: a float FFT of 256 points
would allocate thousands of them per channel per update. Here every value is
a 32-bit integer in a preallocated array('i'); twiddles are Q14.

Overflow on the ESP32's 32-bit words is ruled out by block floating point:
before each stage every component is brought below 2**14 by halving the
whole array (counted in the returned exponent). Then |a|, |b| < 2**14.5, a
twiddle product is < 2**14.5 * 2**14 = 2**28.5, the sum of two < 2**29.5, and
a butterfly output component is < 2**15.5. Band sums square the halved
components, so power per bin stays below 2**30 (band_sum's result is 1/4 of
the true sum). Products and halvings round to nearest: truncation would
bias every stage the same way.

On 64-bit builds ptr32 loads zero-extend; every load is sign-extended with
``(x << sx) >> sx`` where sx is 32 there and 0 on the ESP32.
"""
import array
import math
import sys

import micropython
from micropython import const

_Q = const(14)
_ONE = const(16384)  # 1.0 in Q14
_LIMIT = const(16384)  # components stay below this before a stage
_HALF = const(8192)  # 0.5 in Q14, for rounding
SX = 32 if sys.maxsize > 0x7FFFFFFF else 0


@micropython.viper
def _fft(re, im, wc, ws, n: int, sx: int, rev) -> int:
    r = ptr32(re)
    m = ptr32(im)
    c = ptr32(wc)
    s = ptr32(ws)
    p = ptr16(rev)
    # bit-reversal permutation (rev: the index table)
    i = 0
    while i < n:
        j = int(p[i])
        if i < j:
            t = r[i]
            r[i] = r[j]
            r[j] = t
            t = m[i]
            m[i] = m[j]
            m[j] = t
        i += 1
    big = 0
    i = 0
    while i < n:
        a = (r[i] << sx) >> sx
        if a < 0:
            a = 0 - a
        if a > big:
            big = a
        a = (m[i] << sx) >> sx
        if a < 0:
            a = 0 - a
        if a > big:
            big = a
        i += 1
    shifts = 0
    half = 1
    step = n >> 1
    while half < n:
        # halve every component h times until the largest is below _LIMIT; each
        # component is read once per stage, so the halvings are applied as it is
        # read: h halvings rounded to nearest, (x + 1) >> 1 each, are (x + 2**h - 1) >> h
        h = 0
        while big >= _LIMIT:
            big >>= 1
            h += 1
        shifts += h
        rnd = (1 << h) - 1
        big = 0  # the largest output of this stage: the next one's input
        k = 0
        while k < half:
            wr = (c[k * step] << sx) >> sx
            wi = (s[k * step] << sx) >> sx
            i = k
            while i < n:
                j = i + half
                br = (((r[j] << sx) >> sx) + rnd) >> h
                bi = (((m[j] << sx) >> sx) + rnd) >> h
                tr = (br * wr - bi * wi + _HALF) >> _Q  # rounded: truncation would bias every stage
                ti = (br * wi + bi * wr + _HALF) >> _Q
                ar = (((r[i] << sx) >> sx) + rnd) >> h
                ai = (((m[i] << sx) >> sx) + rnd) >> h
                a = ar + tr
                r[i] = a
                if a < 0:
                    a = 0 - a
                if a > big:
                    big = a
                a = ai + ti
                m[i] = a
                if a < 0:
                    a = 0 - a
                if a > big:
                    big = a
                a = ar - tr
                r[j] = a
                if a < 0:
                    a = 0 - a
                if a > big:
                    big = a
                a = ai - ti
                m[j] = a
                if a < 0:
                    a = 0 - a
                if a > big:
                    big = a
                i += half << 1
            k += 1
        half <<= 1
        step >>= 1
    return shifts


@micropython.viper
def _band_sum(re, im, lo: int, hi: int, out, k: int, sx: int):
    # out[2k], out[2k+1] = sum(re**2 + im**2) over bins lo..hi-1, in 16-bit halves
    r = ptr32(re)
    m = ptr32(im)
    o = ptr32(out)
    acc_hi = 0
    acc_lo = 0
    i = lo
    while i < hi:
        a = ((r[i] << sx) >> sx) >> 1  # halved: |a| < 2**15.5 would square past 2**31
        b = ((m[i] << sx) >> sx) >> 1
        p = a * a + b * b
        acc_hi += p >> 16
        acc_lo += p & 0xFFFF
        i += 1
    acc_hi += acc_lo >> 16
    o[2 * k] = acc_hi
    o[2 * k + 1] = acc_lo & 0xFFFF


@micropython.viper
def _band_sums(re, im, bins, nb: int, out, sx: int):
    # _band_sum for bands 0..nb-1, band b over bins[2b]..bins[2b+1]-1: one call per channel
    r = ptr32(re)
    m = ptr32(im)
    q = ptr32(bins)
    o = ptr32(out)
    k = 0
    while k < nb:
        acc_hi = 0
        acc_lo = 0
        i = int(q[2 * k])
        hi = int(q[2 * k + 1])
        while i < hi:
            a = ((r[i] << sx) >> sx) >> 1
            b = ((m[i] << sx) >> sx) >> 1
            p = a * a + b * b
            acc_hi += p >> 16
            acc_lo += p & 0xFFFF
            i += 1
        acc_hi += acc_lo >> 16
        o[2 * k] = acc_hi
        o[2 * k + 1] = acc_lo & 0xFFFF
        k += 1


def _bit_reversal(n):
    rev = array.array("H", bytes(2 * n))
    bits = 0
    while (1 << bits) < n:
        bits += 1
    for i in range(n):
        j = 0
        for b in range(bits):
            if i >> b & 1:
                j |= 1 << (bits - 1 - b)
        rev[i] = j
    return rev


class FFT:
    """An n-point forward FFT (n a power of two) over the arrays re and im."""

    def __init__(self, n):
        if n < 4 or n & (n - 1):
            raise ValueError("FFT size must be a power of two >= 4, not %d" % n)
        self.n = n
        self.re = array.array("i", bytes(4 * n))
        self.im = array.array("i", bytes(4 * n))
        w = 2 * math.pi / n
        self.wc = array.array("i", (int(round(math.cos(w * k) * _ONE)) for k in range(n // 2)))
        self.ws = array.array("i", (int(round(-math.sin(w * k) * _ONE)) for k in range(n // 2)))
        self.rev = _bit_reversal(n)  # index -> its bit reversal

    def run(self):
        """Transform re/im in place; returns e: the true spectrum is re/im * 2**e."""
        return _fft(self.re, self.im, self.wc, self.ws, self.n, SX, self.rev)

    def band_sum(self, lo, hi, out, k):
        """out[2k] * 65536 + out[2k + 1] = sum of |X|**2 over bins lo..hi-1, divided by 4."""
        _band_sum(self.re, self.im, lo, hi, out, k, SX)

    def band_sums(self, bins, nb, out):
        """band_sum(bins[2b], bins[2b + 1], out, b) for b in 0..nb-1 (bins: an array("i"))."""
        _band_sums(self.re, self.im, bins, nb, out, SX)
