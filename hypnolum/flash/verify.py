"""Step 3: after the reset, the pod must introduce itself as what was uploaded.

Opens the pod link (retrying while the board boots or a native-USB device
comes back): on an ESP32-S3's native USB that is the pod's own CDC-ACM
interface 2 beside the REPL's interface 0, a tty found through sysfs in the
same USB port (host/repl_port.py, link_finder), or with pod.json's
``usb_link: "vendor"`` its vendor interface, opened with pyusb by the serial
number sysfs shows (hypnolum/flash/usblink.py); on a USB-UART bridge or a
pty without a sysfs entry it is the port the upload used. Sends CONNECT once
a second and waits for HELLO; boot-time garbage on the UART is skipped by the
frame decoder. HELLO must carry this host's
protocol version and schema fingerprint, the build hash of the uploaded
bundle, and the provisioned pod id and LED count (proof the pod read the
pod.json just written).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import serial

from hypnolum.host.config import SerialConfig
from hypnolum.host.repl_port import LinkFinder, UsbLink
from hypnolum.protocol import codec

from . import usblink
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


class _SerialLink:
    """The link on a tty, with VendorLink's read/write/close."""

    def __init__(self, port: str):
        self.s = serial.Serial(port, LINK_BAUD, timeout=0, exclusive=True)

    def write(self, data: bytes) -> None:
        try:
            self.s.write(data)
        except serial.SerialException as exc:
            raise usblink.LinkGone(str(exc)) from None

    def read(self) -> bytes:
        try:
            data = self.s.read(4096)
        except serial.SerialException as exc:  # a native-USB port re-enumerating after the reset
            raise usblink.LinkGone(str(exc)) from None
        if not data:
            time.sleep(0.02)
        return data

    def close(self) -> None:
        self.s.close()


Link = _SerialLink | usblink.VendorLink


def _open(find: LinkFinder, name: str, deadline: float, backend: Any) -> Link:
    last = "the pod's link has not appeared"
    while True:
        where = find()
        if isinstance(where, UsbLink):
            try:
                link = usblink.open_link(where, backend)
                if link is not None:
                    return link
                last = f"no USB device with serial number {where.serial} on the bus"
            except usblink.LinkGone as exc:
                last = str(exc)
        elif where is not None:
            try:
                return _SerialLink(where)
            except serial.SerialException as exc:
                last = str(exc)
                if "lock" in last:
                    raise PortBusy(f"{where}: port busy: another program has it open", step="verify") from None
        if time.monotonic() > deadline:
            raise NoAnswer(f"{name}: cannot open the pod link after the reset: {last}", step="verify")
        time.sleep(0.2)


def hello(port: str | LinkFinder, timeout_s: float = 20.0, name: str = "", usb_backend: Any = None) -> dict[str, Any]:
    """HELLO's fields from the pod on ``port`` (a path, or a function giving the link now: a
    path or a USB vendor interface); ``name`` says which board in messages (default: the path).
    ``usb_backend``: pyusb's backend for a vendor interface (None: libusb-1.0)."""
    deadline = time.monotonic() + timeout_s
    find = port if callable(port) else (lambda: port)
    name = name or (port if isinstance(port, str) else "the pod")
    link: Link | None = _open(find, name, deadline, usb_backend)
    decoder = codec.FrameDecoder()
    seq = 0
    next_connect = 0.0
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            try:
                if now >= next_connect:
                    link.write(codec.encode("connect", seq, {
                        "protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT,
                        "host_id": HOST_ID,
                    }))
                    seq += 1
                    next_connect = now + 1.0
                data = link.read()
            except usblink.LinkGone:  # the device re-enumerating after the reset
                link.close()
                link = None
                time.sleep(0.2)
                link = _open(find, name, deadline, usb_backend)
                continue
            for frame in decoder.feed(data):
                if frame.name == "hello":
                    return frame.fields
        raise NoAnswer(f"{name}: no HELLO from the pod within {timeout_s:.0f} s after the reset "
                       f"({decoder.frames} frames, {sum(decoder.errors.values())} bad); "
                       "the firmware did not start: check the board's log over the REPL in safe mode",
                       step="verify")
    finally:
        if link is not None:
            link.close()


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
