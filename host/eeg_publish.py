"""EEG on MQTT: in-order samples gathered into one message per interval (or one per batch,
as soon as it is handed on: ``pending`` wakes the publisher), band powers as JSON.

A message never spans a gap: samples after a lost stretch start a new
message whose ``gap`` is true, so ``seq``/``n`` always describe contiguous
samples. Converting to JSON happens once per message, not per batch. A
message stays within ``max_bytes`` (the broker's and every reader's payload
limit, ``mqtt.max_payload``): a longer run, such as the samples held back
during a replay, goes out as several messages with consecutive ``seq``.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np

from ..protocol import codec
from .state import SCALE_UV

BANDS = ("delta", "theta", "alpha", "beta", "gamma")
_HEAD_BYTES = 512  # the message's fields besides the samples, with room to spare
_VALUE_BYTES = 9  # a 24-bit count: "-8388608" and its comma
_TICKS_MASK = (1 << 30) - 1  # pod ticks_ms wrap at 2**30


class EegPublisher:
    """A Sink that queues ready-to-publish JSON payloads for ``pods/<id>/eeg``."""

    def __init__(self, channels: int, rate_hz: int, max_bytes: int = 65536):
        self.channels = channels
        self.rate_hz = rate_hz
        # rows a message may carry and stay within max_bytes, whatever the values
        self.max_rows = max(1, (max_bytes - _HEAD_BYTES) // (channels * _VALUE_BYTES + 3))
        self._chunks: list[bytes] = []
        self._seq = 0
        self._ticks = 0
        self._t_host = 0.0
        self._t_last = 0.0
        self._gap = False
        self._ready: list[bytes] = []
        self.pending = asyncio.Event()  # set when something was handed on since the last take()

    def samples(self, pos: int, raw: bytes, n: int, seq: int, ticks_ms: int, t_host: float) -> None:
        if not self._chunks:
            self._seq, self._ticks, self._t_host = seq, ticks_ms, t_host
        self._t_last = t_host
        self._chunks.append(raw)
        self.pending.set()

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None:
        self._cut()
        self._gap = True
        self.pending.set()

    def annotate(self, pos: float, text: str) -> None:
        pass  # markers and scene changes have their own topics

    def close(self) -> None:
        self._cut()

    def _cut(self) -> None:
        if not self._chunks:
            return
        counts = codec.eeg_counts({"samples": b"".join(self._chunks), "channels": self.channels})
        self._chunks = []
        total = len(counts)
        span = (self._t_last - self._t_host) / max(total - 1, 1)  # host s per sample in this run
        for first in range(0, total, self.max_rows):
            part = counts[first:first + self.max_rows]
            head = json.dumps({
                "seq": self._seq + first, "n": len(part), "channels": self.channels, "rate_hz": self.rate_hz,
                "t_pod_ms": (self._ticks + first * 1000 // self.rate_hz) & _TICKS_MASK,
                "t_host": round(self._t_host + first * span, 3),
                "t_host_last": round(self._t_host + (first + len(part) - 1) * span, 3),
                "gap": self._gap and first == 0, "scale_uv": SCALE_UV,
            }, separators=(",", ":"))
            self._ready.append(f'{head[:-1]},"samples":{samples_json(part)}}}'.encode())
        self._gap = False

    def take(self) -> list[bytes]:
        """Payloads ready now, as JSON (the samples gathered so far become one)."""
        self.pending.clear()
        self._cut()
        ready, self._ready = self._ready, []
        return ready


def samples_json(counts: np.ndarray) -> str:
    """An (n, channels) integer array as a JSON array of rows, as ``json.dumps(counts.tolist())``
    with compact separators would give, about four times faster: one %-format of all values
    (raw EEG JSON was the largest single cost of hostd with many streaming pods)."""
    n, channels = counts.shape
    row = "[" + ",".join(("%d",) * channels) + "]"
    return ("[" + ",".join((row,) * n) + "]") % tuple(counts.ravel().tolist())


def bands_json(fields: dict[str, Any]) -> dict[str, Any]:
    """The ``pods/<id>/bands`` payload of one eeg_bands message; channel numbers are 1-based."""
    ch = fields["channels"]
    powers = fields["powers"]
    if len(powers) != ch * len(BANDS):
        raise ValueError(f"eeg_bands: {len(powers)} powers for {ch} channels, expected {ch * len(BANDS)}")
    nb = len(BANDS)
    flat = np.round(np.asarray(powers, dtype=np.float64), 4).tolist()  # one numpy call for all channels
    return {
        "last_seq": fields["last_seq"],
        "t_pod_ms": fields["ticks_ms"],
        "t_host": round(time.time(), 3),
        "window_ms": fields["window_ms"],
        "channels": ch,
        "bands": list(BANDS),
        "unit": "uV^2",
        "powers": [flat[i:i + nb] for i in range(0, len(flat), nb)],
        "railed": [i + 1 for i in range(ch) if fields["railed"] >> i & 1],
        "near_railed": [i + 1 for i in range(ch) if fields["near_railed"] >> i & 1],
    }
