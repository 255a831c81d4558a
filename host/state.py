"""What hostd knows about one pod, and its JSON form for the state topic."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# link values
CONNECTING = "connecting"  # port open, handshaking (or link lost, re-handshaking)
ONLINE = "online"
REFUSED = "refused"  # pod answered but cannot be used (core message, unknown schema, version, duplicate id)
OFFLINE = "offline"  # port gone or hostd stopping

# Nominal ADS1299 scale at gain 24, microvolts per count.
SCALE_UV = 4.5 / (2**23 - 1) / 24 * 1e6


@dataclass
class Counters:
    """Host-side counters of one session (the pod's own are in PodState.pod_status)."""

    frames_rx: int = 0
    frames_bad: dict[str, int] = field(default_factory=dict)  # decoder errors by kind
    eeg_batches: int = 0
    eeg_samples: int = 0
    eeg_seq_gaps: int = 0
    commands_sent: int = 0
    commands_retried: int = 0
    commands_failed: int = 0
    commands_bad: int = 0
    commands_busy: int = 0  # set commands answered "busy": the pod had its most in flight
    reconnects: int = 0
    reboots: int = 0
    events_dropped: int = 0
    frames_failed: int = 0  # frames whose handler failed (contained: the link went on)
    # frames dropped undecoded, by message: the pod lays that message out otherwise (PodState.unsupported)
    frames_unsupported: dict[str, int] = field(default_factory=dict)
    frames_before_hello: int = 0  # non-core frames dropped before the pod's HELLO said how it lays them out
    sends_unsupported: int = 0  # messages not sent: the pod lays them out otherwise (PodState.unsupported)
    rtt_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        """As ``dataclasses.asdict`` gives it, without its recursive deep copy (once per state message)."""
        out = dict(vars(self))
        out["frames_bad"] = dict(self.frames_bad)
        out["frames_unsupported"] = dict(self.frames_unsupported)
        return out


@dataclass
class PodState:
    port: str
    pod_id: str | None = None
    link: str = CONNECTING
    reason: str = ""
    firmware: str | None = None
    protocol: int | None = None
    fingerprint: int | None = None
    # message name -> why this host cannot use it with this pod (protocol/compat.py)
    unsupported: dict[str, str] = field(default_factory=dict)
    boot_id: int | None = None
    build_hash: int | None = None  # of the firmware the pod runs (HELLO; 0: unknown)
    led_count: int | None = None
    eeg_channels: int | None = None
    sample_rate_hz: int | None = None
    scene: dict[str, Any] | None = None
    counters: Counters = field(default_factory=Counters)
    pod_status: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] = field(default_factory=dict)  # the pod's last POWER frame
    eeg: dict[str, Any] = field(default_factory=dict)  # the pod's EegStream (see eeg.py), kept across sessions
    clock: Any = None  # () -> dict: the pod clock estimate (host/clock.py PodClock.state)
    update: dict[str, Any] | None = None  # an update over the link (host/updates.py): state, received, total

    def to_json(self) -> dict[str, Any]:
        return {
            "pod_id": self.pod_id,
            "link": self.link,
            "reason": self.reason,
            "port": self.port,
            "firmware": self.firmware,
            "protocol": self.protocol,
            "fingerprint": None if self.fingerprint is None else f"0x{self.fingerprint:08x}",
            "build_hash": None if self.build_hash is None else f"0x{self.build_hash:08x}",
            "unsupported": dict(self.unsupported),
            "capabilities": {
                "led_count": self.led_count,
                "eeg_channels": self.eeg_channels,
                "sample_rate_hz": self.sample_rate_hz,
            },
            "scene": self.scene,
            "counters": {"host": self.counters.to_json(), "pod": dict(self.pod_status)},
            "power": dict(self.power) or None,
            "eeg": self.eeg,
            "clock": self.clock() if self.clock is not None else None,
            "update": self.update,
            "updated": now_iso(),
        }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
