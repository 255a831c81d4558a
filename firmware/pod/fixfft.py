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
def _fft(re, im, wc, ws, n: int, sx: int) -> int:
    r = ptr32(re)
    m = ptr32(im)
    c = ptr32(wc)
    s = ptr32(ws)
    # bit-reversal permutation
    j = 0
    i = 0
    while i < n - 1:
        if i < j:
            t = r[i]
            r[i] = r[j]
            r[j] = t
            t = m[i]
            m[i] = m[j]
            m[j] = t
        k = n >> 1
        while k <= j:
            j -= k
            k >>= 1
        j += k
        i += 1
    shifts = 0
    half = 1
    step = n >> 1
    while half < n:
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
        while big >= _LIMIT:
            i = 0
            while i < n:
                r[i] = (((r[i] << sx) >> sx) + 1) >> 1
                m[i] = (((m[i] << sx) >> sx) + 1) >> 1
                i += 1
            big >>= 1
            shifts += 1
        k = 0
        while k < half:
            wr = (c[k * step] << sx) >> sx
            wi = (s[k * step] << sx) >> sx
            i = k
            while i < n:
                j = i + half
                br = (r[j] << sx) >> sx
                bi = (m[j] << sx) >> sx
                tr = (br * wr - bi * wi + _HALF) >> _Q  # rounded: truncation would bias every stage
                ti = (br * wi + bi * wr + _HALF) >> _Q
                ar = (r[i] << sx) >> sx
                ai = (m[i] << sx) >> sx
                r[i] = ar + tr
                m[i] = ai + ti
                r[j] = ar - tr
                m[j] = ai - ti
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

    def run(self):
        """Transform re/im in place; returns e: the true spectrum is re/im * 2**e."""
        return _fft(self.re, self.im, self.wc, self.ws, self.n, SX)

    def band_sum(self, lo, hi, out, k):
        """out[2k] * 65536 + out[2k + 1] = sum of |X|**2 over bins lo..hi-1, divided by 4."""
        _band_sum(self.re, self.im, lo, hi, out, k, SX)
