"""Effects: a table from wire effect id to (check, colour) functions.

An effect computes the colour of the whole array for a moment of the scene
(uniform effects; per-LED effects will write the frame themselves). Colours
are written into a caller's 3-byte buffer and all arithmetic is on small
ints, so rendering allocates nothing (a float is a heap object on the ESP32).
"""
from micropython import const

from pod import wire

_MIN_PERIOD_MS = const(100)  # shorter "breathing" is flicker, not an animation

# One breath, 256 steps from dark through full (step 128) back to dark, built
# once at import. The falloff from the peak is smoothstep, 1 - 3x^2 + 2x^3 for
# x = d / 128, scaled by 128**3 so every intermediate stays a small int.
_BREATH = bytearray(256)


def _build_breath():
    for i in range(256):
        d = i - 128 if i >= 128 else 128 - i  # distance from the peak, 0..128
        v = 2097152 - 384 * d * d + 2 * d * d * d
        _BREATH[i] = v * 255 // 2097152


_build_breath()


class Scene:
    """The scene being shown: what the host asked for, checked."""

    def __init__(self):
        self.effect = wire.EFFECT_OFF
        self.brightness = 0
        self.color = bytearray(3)
        self.transition_ms = 0
        self.period_ms = 0
        self.params = ()


def _check_any(brightness, color, transition_ms, period_ms, params):
    return 0


def _check_breathe(brightness, color, transition_ms, period_ms, params):
    if period_ms < _MIN_PERIOD_MS:
        return wire.NACK_REASON_BAD_PARAM
    return 0


def _off(scene, t_ms, out):
    out[0] = 0
    out[1] = 0
    out[2] = 0


def _solid(scene, t_ms, out):
    c = scene.color
    out[0] = c[0]
    out[1] = c[1]
    out[2] = c[2]


def _breathe(scene, t_ms, out):
    # t_ms: ms since the scene started, >= 0
    level = _BREATH[(t_ms % scene.period_ms) * 256 // scene.period_ms]
    c = scene.color
    out[0] = c[0] * level // 255
    out[1] = c[1] * level // 255
    out[2] = c[2] * level // 255


# effect id -> (check(brightness, color, transition_ms, period_ms, params) -> 0 | nack reason,
#               colour(scene, t_ms, out3))
EFFECTS = {
    wire.EFFECT_OFF: (_check_any, _off),
    wire.EFFECT_SOLID: (_check_any, _solid),
    wire.EFFECT_BREATHE: (_check_breathe, _breathe),
}


def check(effect, brightness, color, transition_ms, period_ms, params):
    """0 if the scene can be shown, else the wire.NACK_REASON_* why not."""
    entry = EFFECTS.get(effect)
    if entry is None:
        return wire.NACK_REASON_UNKNOWN_EFFECT
    if len(params) > wire.MAX_SCENE_PARAMS:
        return wire.NACK_REASON_BAD_PARAM
    return entry[0](brightness, color, transition_ms, period_ms, params)


def colour_fn(effect):
    return EFFECTS[effect][1]
