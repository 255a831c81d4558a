"""What a pod session tells the hub, in order, on ``PodSession.events``.

- :data:`STATE_CHANGED` whenever the session's ``state`` changed (the hub
  renders the state when it publishes it, so the event carries nothing);
- :class:`EegBatch` per EEG batch from the pod, as it came off the wire;
- :class:`Bands` per band-power message;
- :data:`ENDED` once, last: the session is over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StateChanged:
    pass


@dataclass(frozen=True, slots=True)
class Ended:
    pass


STATE_CHANGED = StateChanged()
ENDED = Ended()


@dataclass(frozen=True, slots=True)
class EegBatch:
    """One EEG batch: ``n`` samples of ``channels`` 24-bit big-endian counts in ``samples``,
    the first with pod sequence number ``seq``."""

    seq: int
    n: int
    channels: int
    rate_hz: int | None
    t_pod_ms: int  # the pod's ticks_ms when it sent the batch
    t_host: float  # host wall clock (s) when it arrived
    gap: bool  # samples are missing before this batch (seen by the host or flagged by the pod)
    replay: bool  # sent again from the pod's ring, on request
    pod_gap: bool  # the pod itself flagged a gap before it
    samples: bytes

    def fields(self) -> dict[str, Any]:
        """The batch as the EEG streams (host/streams.py) take it."""
        return {"seq": self.seq, "n": self.n, "channels": self.channels, "rate_hz": self.rate_hz,
                "t_pod_ms": self.t_pod_ms, "t_host": self.t_host, "gap": self.gap, "replay": self.replay,
                "pod_gap": self.pod_gap, "samples": self.samples}


@dataclass(frozen=True, slots=True)
class Bands:
    """One EEG_BANDS message's fields, as decoded."""

    fields: dict[str, Any]


Event = StateChanged | EegBatch | Bands | Ended
