"""Palettes: a few colour stops per palette, expanded to a 256-step gradient.

Ids are the protocol's Palette enum (wire.PALETTE_*). expand() fills a
caller's 768-byte buffer once when a scene starts; effects then index it with
a byte, so a frame never interpolates colours itself.
"""
from pod import wire

# id -> stops (position 0..255, r, g, b), positions rising, first 0, last 255
STOPS = {
    wire.PALETTE_WARM: ((0, 40, 8, 0), (96, 160, 50, 4), (176, 255, 120, 30), (255, 255, 170, 80)),
    wire.PALETTE_EMBER: ((0, 20, 0, 0), (80, 140, 10, 0), (160, 230, 70, 0), (255, 255, 140, 20)),
    wire.PALETTE_OCEAN: ((0, 0, 10, 40), (90, 0, 60, 120), (170, 20, 140, 160), (255, 120, 200, 220)),
    wire.PALETTE_AURORA: ((0, 0, 40, 30), (70, 0, 200, 90), (140, 30, 120, 160), (200, 120, 40, 170), (255, 0, 160, 120)),
    wire.PALETTE_FOREST: ((0, 5, 30, 5), (100, 30, 110, 20), (180, 90, 150, 30), (255, 170, 190, 80)),
    wire.PALETTE_DUSK: ((0, 30, 10, 60), (90, 120, 30, 110), (170, 230, 90, 60), (255, 255, 170, 90)),
    wire.PALETTE_MOON: ((0, 10, 12, 25), (120, 70, 80, 110), (200, 160, 170, 190), (255, 220, 220, 230)),
}

SIZE = 768  # 256 entries x (r, g, b)


def expand(pid, out):
    """Fill out (SIZE bytes) with palette pid's gradient; ValueError if unknown."""
    stops = STOPS.get(pid)
    if stops is None:
        raise ValueError("palette")
    k = 0
    for i in range(256):
        while stops[k + 1][0] < i:
            k += 1
        a = stops[k]
        b = stops[k + 1]
        span = b[0] - a[0]
        f = i - a[0]
        for c in range(1, 4):
            out[3 * i + c - 1] = a[c] + (b[c] - a[c]) * f // span
    return out
