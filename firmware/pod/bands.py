"""On-pod band powers: delta, theta, alpha, beta, gamma per channel, sent as EEG_BANDS.

Every 250 ms (4 Hz) the newest window of samples is read from the sample
ring: 256 samples at 250 Hz (1.024 s), 128 at 125 Hz with the Daisy. Per
channel the mean is removed, a periodic Hann window applied, and a
fixed-point FFT (fixfft.py) taken; band power is the one-sided periodogram
integrated over the band's bins:

    P_band = 2 * sum_k |X_k|^2 / (N * sum_i w_i^2)    [uV^2], k with lo <= f_k < hi

which is exactly scipy.signal.periodogram(x, fs, window="hann",
detrend="constant", scaling="density") summed over those bins times the bin
width fs/N. Bands follow the usual clinical edges: delta 0.5–4, theta 4–8,
alpha 8–13, beta 13–30, gamma 30–45 Hz (45 stays clear of 50 Hz mains).

Memory is fixed: the window is read in place from the ring (no copy of the
history), the FFT works in two preallocated int arrays, and only the final
per-band scaling (channels x 5 values per update) touches floats. A sample
missing in the window (lost before the pod saw it) repeats the previous one.
"""
import array
import asyncio
import math
import struct

import hal
import micropython
from micropython import const

from pod import fixfft, wire
from pod.mem import copy as _copy

UPDATE_MS = const(250)
N_BANDS = const(5)
BANDS_HZ = ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 45.0))
_MASK30 = const(0x3FFFFFFF)
# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
_FIXED = const(15)  # eeg_bands.powers: the u8 count after last_seq u32, ticks_ms u32, channels u8, 3 x u16
# end of wire layout
_WIN_ONE = const(32768)  # window values are Q15
_HI_SMALL = const(1 << 14)  # a band sum hi * 65536 + lo with hi under this is a small int
_TARGET = const(8192)  # samples are normalised to [2**13, 2**14) before windowing
_VREF_UV = 4500000.0
_FULL_SCALE = 8388607.0
_POWERS = const(_HDR + _FIXED + 1)  # the powers' first byte in a frame body (after their u8 count)


def _layout_ok():
    # the powers are copied into the frame as array("f") holds them: little-endian f32,
    # right after the fixed part and the u8 count (wire.pack_eeg_bands with a count)
    b = bytearray(_POWERS + 4)
    end = wire.pack_eeg_bands(b, _HDR, 0, 0, 0, 0, 0, 0, 0, (1.5,))
    return end == _POWERS + 4 and b[_POWERS:] == bytes(array.array("f", (1.5,))) == struct.pack("<f", 1.5)


if not _layout_ok():
    raise ImportError("bands: EEG_BANDS layout does not match wire.py")


@micropython.viper
def _load(re, im, data, meta, cap: int, slot0: int, n: int, off: int, sb: int, win, sx: int) -> int:
    # channel at byte `off` of the n samples in ring slots slot0.. -> mean removed,
    # normalised and windowed into re (im zeroed); returns the exponent s: true = re * 2**s / w
    r = ptr32(re)
    m = ptr32(im)
    d = ptr8(data)
    q = ptr16(meta)
    w = ptr32(win)
    prev = 0
    hi = 0
    lo = n >> 1  # rounds the mean to nearest
    slot = slot0
    i = 0
    while i < n:
        if q[slot] & 0x8000:  # the slot holds its sample (ring.py)
            p = slot * sb + off
            v = (d[p] << 16) | (d[p + 1] << 8) | d[p + 2]
            if v & 0x800000:
                v -= 0x1000000
            prev = v
        r[i] = prev
        hi += prev >> 8
        lo += prev & 0xFF
        slot += 1
        if slot == cap:
            slot = 0
        i += 1
    # mean = round(sum / n) from sum = hi * 256 + lo, without a 32-bit overflow; n is a power of two
    lg = 0
    while (1 << lg) < n:
        lg += 1
    mean = ((hi >> lg) << 8) + ((((hi & (n - 1)) << 8) + lo) >> lg)
    big = 0
    i = 0
    while i < n:
        v = ((r[i] << sx) >> sx) - mean
        r[i] = v
        if v < 0:
            v = 0 - v
        if v > big:
            big = v
        i += 1
    s = 0
    if big:
        while big >= 2 * _TARGET:
            big >>= 1
            s += 1
        while big < _TARGET:
            big <<= 1
            s -= 1
    i = 0
    while i < n:
        v = (r[i] << sx) >> sx
        if s >= 0:
            v = v >> s
        else:
            v = v << (0 - s)
        r[i] = (v * ((w[i] << sx) >> sx)) >> 15
        m[i] = 0
        i += 1
    return s


class BandPower:
    """Computes and sends EEG_BANDS from a ring.SampleRing."""

    def __init__(self, ring, sample_rate_hz, take_masks=None, link=None, gain=24):
        self.ring = ring
        self.link = link
        self.take_masks = take_masks  # () -> (railed, near_railed) bits since the last call
        self.channels = ring.channels
        self.fs = sample_rate_hz
        n = 4
        while n * 2 <= sample_rate_hz * 1.1:
            n *= 2
        self.n = n  # ~1 s window, a power of two
        self.window_ms = (n * 1000) // sample_rate_hz
        if n > ring.capacity:
            raise ValueError("ring holds %d samples; the band window needs %d" % (ring.capacity, n))
        self.fft = fixfft.FFT(n)
        win = array.array("i", bytes(4 * n))
        s2 = 0.0
        for i in range(n):
            q = int(round((0.5 - 0.5 * math.cos(2 * math.pi * i / n)) * (_WIN_ONE - 1)))
            win[i] = q
            s2 += (q / _WIN_ONE) ** 2
        self.win = win
        self._norm = 2.0 / (n * s2)
        self.bins = []
        for lo_hz, hi_hz in BANDS_HZ:
            lo = int(math.ceil(lo_hz * n / sample_rate_hz))
            hi = min(int(math.ceil(hi_hz * n / sample_rate_hz)), n // 2)
            self.bins.append((max(lo, 1), hi))
        self._bins = array.array("i", [b for lo_hi in self.bins for b in lo_hi])  # for fft.band_sums
        self.sums = array.array("i", bytes(4 * 2 * N_BANDS))
        self.powers = array.array("f", bytes(4 * N_BANDS * self.channels))
        self.gains = [gain] * self.channels
        self._base_gain = None  # the gain self._base was computed for
        self._base = 0.0
        self._scales = [0.0] * self.channels  # per channel: the scale for ...
        self._scale_x = [None] * self.channels  # ... this FFT exponent and ...
        self._scale_gain = [None] * self.channels  # ... this gain
        self.last_seq = 0
        self._slot0 = 0
        self.last_hi = 0
        self.updates = 0
        self.skipped = 0  # updates without a full window yet

    def compute(self):
        """Fill self.powers from the newest window; False if the ring has too few samples yet."""
        if not self._begin():
            return False
        for ch in range(self.channels):
            self._channel(ch)
        self.updates += 1
        return True

    async def compute_sliced(self):
        """compute(), yielding to the other tasks between channels: one channel's FFT
        is the longest the render loop can be kept from showing a frame on time."""
        if not self._begin():
            return False
        for ch in range(self.channels):
            self._channel(ch)
            await asyncio.sleep_ms(0)
        self.updates += 1
        return True

    def _begin(self):
        ring = self.ring
        n = self.n
        if ring.held < n:
            self.skipped += 1
            return False
        last = ring.newest
        self._slot0 = ring.slot((last - n + 1) & _MASK30)
        self.last_seq = last  # low 30 bits, and the 2 above:
        self.last_hi = ring.newest_hi
        return True

    def _channel(self, ch):
        ring = self.ring
        fft = self.fft
        sums = self.sums
        powers = self.powers
        s = _load(fft.re, fft.im, ring.data, ring.meta, ring.capacity, self._slot0, self.n, ch * 3,
                  ring.sample_bytes, self.win, fixfft.SX)
        e = fft.run()
        fft.band_sums(self._bins, N_BANDS, sums)
        gain = self.gains[ch]
        if gain != self._base_gain:  # the gain's part of the scale, kept while the gain holds
            uv = _VREF_UV / _FULL_SCALE / gain
            self._base = 4.0 * self._norm * uv * uv
            self._base_gain = gain
        # floats are heap objects on the board (MICROPY_OBJ_REPR_A): each operation below
        # allocates 16 B, so the scale is kept while the channel's exponent and gain hold,
        # and a band sum that fits a small int takes one multiplication, not three
        x = s + e
        if x != self._scale_x[ch] or self._scale_gain[ch] != self._base_gain:
            self._scales[ch] = self._base * 4.0 ** x  # band_sum gives 1/4 of the sum
            self._scale_x[ch] = x
            self._scale_gain[ch] = self._base_gain
        scale = self._scales[ch]
        k = ch * N_BANDS
        for b in range(N_BANDS):
            hi = sums[2 * b]
            if hi < _HI_SMALL:
                powers[k + b] = ((hi << 16) | sums[2 * b + 1]) * scale
            else:
                powers[k + b] = (hi * 65536.0 + sums[2 * b + 1]) * scale

    def send(self):
        ring = self.ring
        railed, near = self.take_masks() if self.take_masks is not None else (0, 0)
        link = self.link
        body = link.body
        powers = self.powers
        _copy(body, _POWERS, powers, 0, 4 * len(powers))  # packed below as "already in place"
        end = wire.pack_eeg_bands(
            body, _HDR, self.last_seq, self.last_hi, ring.ticks(self.last_seq), self.channels, self.window_ms,
            railed, near, len(powers)
        )
        link.send_telemetry(wire.T_EEG_BANDS, end)

    async def run(self):
        due = hal.ticks_add(hal.ticks_ms(), UPDATE_MS)
        while True:
            wait = hal.ticks_diff(due, hal.ticks_ms())
            if wait > 0:
                await asyncio.sleep_ms(wait)
            if await self.compute_sliced():
                self.send()
            due = hal.ticks_add(due, UPDATE_MS)
            if hal.ticks_diff(due, hal.ticks_ms()) < 0:
                due = hal.ticks_ms()  # fell behind: do not burst
