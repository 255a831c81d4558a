"""LED wire encodings: gamma, colour order, RGBW white extraction, APA102 framing.

Frames inside the firmware are sRGB-coded R, G, B bytes (what a screen would
show for the same numbers). The LEDs' PWM is linear in light, so the bytes go
through the sRGB transfer function (the same one WCAG's relative luminance
uses) on the way out: DUTY[v] is the PWM duty for byte v. The safety governor
estimates current from the same table, so its estimate is the driven duty.

Pure functions over preallocated buffers: the HAL (firmware/hal.py on the
board, emulator/mpy/hal.py in the emulator) calls them, tests run them under
the unix port.
"""
import micropython
from micropython import const

KIND_WS2812 = const(0)  # also SK6812 RGB
KIND_SK6812_RGBW = const(1)
KIND_APA102 = const(2)  # also SK9822
KINDS = {"ws2812": KIND_WS2812, "sk6812": KIND_WS2812, "sk6812_rgbw": KIND_SK6812_RGBW,
         "apa102": KIND_APA102, "sk9822": KIND_APA102}

ORDERS = ("RGB", "RBG", "GRB", "GBR", "BRG", "BGR")
ORDERS_W = ("RGBW", "GRBW", "BRGW", "WRGB", "WGRB")

_APA_START = const(4)  # 32 zero bits
_APA_GLOBAL = const(0xFF)  # 0b111 + 5-bit global brightness 31: full, PWM does the rest


def _srgb_to_linear(c):
    c = c / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


# byte -> PWM duty 0..255 (rounded half up) and byte -> linear light 0..65535.
# Built once at import: floats are fine here, never per frame.
DUTY = bytearray(256)
LIN16 = bytearray(512)  # u16 little-endian pairs; read with ptr16 in viper


def _build():
    for v in range(256):
        lin = _srgb_to_linear(v)
        DUTY[v] = int(lin * 255 + 0.5)
        x = int(lin * 65535 + 0.5)
        LIN16[2 * v] = x & 0xFF
        LIN16[2 * v + 1] = x >> 8


_build()


def order_index(order):
    """(i0, i1, i2, iw) source channel per wire slot; 3 = white (RGBW), -1 = none."""
    if order in ORDERS:
        return ("RGB".index(order[0]), "RGB".index(order[1]), "RGB".index(order[2]), -1)
    if order in ORDERS_W:
        return tuple("RGBW".index(ch) for ch in order)
    raise ValueError("led order " + str(order))


def wire_size(kind, count):
    """Bytes one frame takes on the data line."""
    if kind == KIND_APA102:
        return _APA_START + 4 * count + (count + 15) // 16  # end frame: count/2 bits of clock
    if kind == KIND_SK6812_RGBW:
        return 4 * count
    return 3 * count


@micropython.viper
def encode_rgb(dst, src, n: int, duty, i0: int, i1: int, i2: int):
    """n LEDs of sRGB bytes -> gamma-corrected duties in wire order."""
    d = ptr8(dst)
    s = ptr8(src)
    g = ptr8(duty)
    j = 0
    k = 0
    while k < n:
        d[j] = g[s[k + i0]]
        d[j + 1] = g[s[k + i1]]
        d[j + 2] = g[s[k + i2]]
        j += 3
        k += 3


@micropython.viper
def encode_rgbw(dst, src, n: int, duty, i0: int, i1: int, i2: int, i3: int):
    """n LEDs of sRGB bytes -> R, G, B, W duties; the white LED takes the common part.

    Index 3 in i0..i3 is the white slot. Extraction is done on duties (linear
    light), so colour and total light stay what the RGB frame asks for.
    """
    d = ptr8(dst)
    s = ptr8(src)
    g = ptr8(duty)
    j = 0
    k = 0
    while k < n:
        r = g[s[k]]
        gr = g[s[k + 1]]
        b = g[s[k + 2]]
        w = r
        if gr < w:
            w = gr
        if b < w:
            w = b
        r -= w
        gr -= w
        b -= w
        m = 0
        while m < 4:
            if m == 0:
                slot = i0
            elif m == 1:
                slot = i1
            elif m == 2:
                slot = i2
            else:
                slot = i3
            if slot == 0:
                d[j + m] = r
            elif slot == 1:
                d[j + m] = gr
            elif slot == 2:
                d[j + m] = b
            else:
                d[j + m] = w
            m += 1
        j += 4
        k += 3


@micropython.viper
def encode_apa102(dst, src, n: int, duty, i0: int, i1: int, i2: int):
    """APA102/SK9822: 4 zero bytes, then per LED 0xFF (global 31) + 3 duties, then
    an end frame of 0xFF bytes (SK9822 needs the extra clocks; APA102 ignores them)."""
    d = ptr8(dst)
    s = ptr8(src)
    g = ptr8(duty)
    d[0] = 0
    d[1] = 0
    d[2] = 0
    d[3] = 0
    j = 4
    k = 0
    while k < n:
        d[j] = 0xFF
        d[j + 1] = g[s[k + i0]]
        d[j + 2] = g[s[k + i1]]
        d[j + 3] = g[s[k + i2]]
        j += 4
        k += 3
    end = int(len(dst))
    while j < end:
        d[j] = 0xFF
        j += 1


def encode(kind, dst, src, n_bytes, idx):
    """One frame: src (n_bytes of sRGB R, G, B) -> dst in the kind's wire format."""
    if kind == KIND_APA102:
        encode_apa102(dst, src, n_bytes, DUTY, idx[0], idx[1], idx[2])
    elif kind == KIND_SK6812_RGBW:
        encode_rgbw(dst, src, n_bytes, DUTY, idx[0], idx[1], idx[2], idx[3])
    else:
        encode_rgb(dst, src, n_bytes, DUTY, idx[0], idx[1], idx[2])


def setup(count, order, kind):
    """(kind id, order indices, wire buffer) for a Leds; an RGBW strip with a 3-letter order gets W last."""
    k = KINDS.get(kind)
    if k is None:
        raise ValueError("led type " + str(kind))
    if k == KIND_SK6812_RGBW and len(order) == 3:
        order += "W"
    elif k != KIND_SK6812_RGBW and len(order) == 4:
        order = order.replace("W", "")
    return k, order_index(order), bytearray(wire_size(k, count))


# One-wire LEDs (WS2812/SK6812) through SPI: 4 SPI bits per LED bit at 3.2 MHz,
# 1000 for a 0 (312 ns high) and 1110 for a 1 (937 ns high), a 1.25 us bit as the
# LEDs expect. An SPI transfer runs on DMA, so the HAL can send it from a thread
# while the interpreter goes on (docs/board-port.md "LED output").
SPI_ONEWIRE_BAUD = const(3200000)
_SPI_PAIR = b"\x88\x8e\xe8\xee"  # two LED bits -> one SPI byte


def _spread_table():
    # wire byte -> its 4 SPI bytes, in memory order: spread_onewire moves them as one word
    t = bytearray(1024)
    for b in range(256):
        t[4 * b] = _SPI_PAIR[(b >> 6) & 3]
        t[4 * b + 1] = _SPI_PAIR[(b >> 4) & 3]
        t[4 * b + 2] = _SPI_PAIR[(b >> 2) & 3]
        t[4 * b + 3] = _SPI_PAIR[b & 3]
    return t


_SPREAD = _spread_table()


def spi_onewire_size(wire_len):
    """SPI bytes for a one-wire frame of wire_len bytes."""
    return 4 * wire_len


@micropython.viper
def spread_onewire(dst, src, n: int):
    """n wire bytes -> 4n SPI bytes (two LED bits a byte, most significant first).

    dst is a bytearray of its own (word-aligned: the heap's blocks are): each
    wire byte's 4 SPI bytes are one word of a table, in memory order, so the
    result does not depend on the CPU's byte order."""
    d = ptr32(dst)
    s = ptr8(src)
    t = ptr32(_SPREAD)
    k = 0
    while k < n:
        d[k] = t[s[k]]
        k += 1
