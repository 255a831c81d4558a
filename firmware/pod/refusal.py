"""Why a command is refused: the field that failed and the range it allows (NACK's detail).

A command's sink that refuses names the failing field before it returns the
reason: ``return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_SCENE_PERIOD_MS, 500, 3000)``.
The link clears the detail before each frame and sends it with the NACK.
DETAIL is allocated once; setting it stores small ints only.
"""
from micropython import const

_NONE = const(0xFF)  # wire.NACK_NO_FIELD

# field index in the refused message, item index inside it (a list or array), lo, hi
DETAIL = [_NONE, _NONE, 0, 0]


def clear():
    d = DETAIL
    d[0] = _NONE
    d[1] = _NONE
    d[2] = 0
    d[3] = 0


def field(reason, index, lo, hi, item=_NONE):
    """Name field ``index`` (and ``item`` inside it) and its range lo..hi; returns ``reason``."""
    d = DETAIL
    d[0] = index
    d[1] = item
    d[2] = lo
    d[3] = hi
    return reason
