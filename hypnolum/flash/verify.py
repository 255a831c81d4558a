"""Step 3: after the reset, the pod must introduce itself as what was uploaded.

Opens the pod link's port (retrying while the board boots or a native-USB
port comes back): on an ESP32-S3's native USB that is the pod's own CDC-ACM
interface 2 beside the REPL's interface 0, found through sysfs by the USB
device's serial number (host/repl_port.py, link_finder); on a USB-UART bridge
or a pty it is the port the upload used. Sends CONNECT once a second and waits
for HELLO; boot-time garbage on
the UART is skipped by the frame decoder. HELLO must carry this host's
protocol version and schema fingerprint, the build hash of the uploaded
bundle, and the provisioned pod id and LED count (proof the pod read the
pod.json just written).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import serial

from hypnolum.host.config import SerialConfig
from hypnolum.protocol import codec

from .errors import NoAnswer, PortBusy, VerifyMismatch

HOST_ID = "flash-tool"
# The pod link rides the ESP32-S3's USB CDC, which ignores the baud rate; the
# port is still opened at hostd's own default (serial.baudrate) so both name
# one setting, and a pod on a USB-UART would be spoken to alike.
LINK_BAUD: int = SerialConfig.model_fields["baudrate"].default


@dataclass(frozen=True)
class Expected:
    build_hash: int
    pod_id: str
    led_count: int
    fingerprint: int = codec.FINGERPRINT
    protocol_version: int = codec.PROTOCOL_VERSION


PortFinder = Callable[[], "str | None"]  # the link's port now; None while it has none


def _open(find: PortFinder, name: str, deadline: float) -> serial.Serial:
    last = "the pod's link port has not appeared"
    while True:
        port = find()
        if port is not None:
            try:
                s = serial.Serial(port, LINK_BAUD, timeout=0, exclusive=True)
                return s
            except serial.SerialException as exc:
                last = str(exc)
                if "lock" in last:
                    raise PortBusy(f"{port}: port busy: another program has it open", step="verify") from None
        if time.monotonic() > deadline:
            raise NoAnswer(f"{name}: cannot open the pod link after the reset: {last}", step="verify")
        time.sleep(0.2)


def hello(port: str | PortFinder, timeout_s: float = 20.0, name: str = "") -> dict[str, Any]:
    """HELLO's fields from the pod on ``port`` (a path, or a function giving the link's path
    now); ``name`` says which board in messages (default: the path)."""
    deadline = time.monotonic() + timeout_s
    find = port if callable(port) else (lambda: port)
    name = name or (port if isinstance(port, str) else "the pod")
    s = _open(find, name, deadline)
    decoder = codec.FrameDecoder()
    seq = 0
    next_connect = 0.0
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_connect:
                s.write(codec.encode("connect", seq, {
                    "protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT, "host_id": HOST_ID,
                }))
                seq += 1
                next_connect = now + 1.0
            try:
                data = s.read(4096)
            except serial.SerialException:  # a native-USB port re-enumerating after the reset
                s.close()
                s = None
                time.sleep(0.2)
                s = _open(find, name, deadline)
                continue
            if not data:
                time.sleep(0.02)
                continue
            for frame in decoder.feed(data):
                if frame.name == "hello":
                    return frame.fields
        raise NoAnswer(f"{name}: no HELLO from the pod within {timeout_s:.0f} s after the reset "
                       f"({decoder.frames} frames, {sum(decoder.errors.values())} bad); "
                       "the firmware did not start: check the board's log over the REPL in safe mode",
                       step="verify")
    finally:
        if s is not None:
            s.close()


def check(fields: dict[str, Any], want: Expected) -> None:
    """VerifyMismatch listing every field that differs."""
    wrong = []
    pairs = (
        ("protocol_version", want.protocol_version, "%d"),
        ("fingerprint", want.fingerprint, "%#010x"),
        ("build_hash", want.build_hash, "%#010x"),
        ("pod_id", want.pod_id, "%s"),
        ("led_count", want.led_count, "%d"),
    )
    for key, expected, fmt in pairs:
        got = fields.get(key)
        if got != expected:
            wrong.append(f"{key} is {fmt % got if got is not None else 'missing'}, expected {fmt % expected}")
    if wrong:
        hint = ""
        if any(w.startswith("build_hash") for w in wrong):
            hint = " (the files on the board are not the ones uploaded: re-run the upload)"
        elif any(w.startswith("fingerprint") for w in wrong):
            hint = " (the board's firmware and this host speak different protocol builds)"
        raise VerifyMismatch("verify failed: " + "; ".join(wrong) + hint, step="verify")


def verify(port: str, want: Expected, timeout_s: float = 20.0) -> dict[str, Any]:
    fields = hello(port, timeout_s)
    check(fields, want)
    return fields
