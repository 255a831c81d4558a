"""Devices on the fake USB bus (tests/helpers/fake_usb.py) that are not emulated pods.

A host's bus holds keyboards, hubs, webcams, and at times a device with a pod's
VID:PID that is not the pod asked for. :class:`OtherDevice` is such a device:
it answers the standard requests from its own descriptors as a device does
(GET_DESCRIPTOR for the device, configuration and strings; SET/GET_CONFIGURATION),
stalls the rest, and counts what the host asked of it (``control_transfers``,
``string_reads``), so a test can tell what scanning costs each device.
"""
from __future__ import annotations

import errno
import struct

import usb.core

from .fake_usb import _PIPE, UsbBus, _no_device, _parse_config

_LANGIDS = b"\x04\x03\x09\x04"  # string 0: English (US)


def _string(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return bytes((2 + len(data), 3)) + data


class OtherDevice:
    """A device plugged into ``usb_bus``, with one interface of ``interface_class`` (HID by default) and
    an interrupt IN endpoint; strings 1-3: manufacturer, product, serial (if any)."""

    def __init__(self, usb_bus: UsbBus, vid: int, pid: int, serial: str | None = None,
                 interface_class: int = 0x03, product: str = "USB device"):
        self.bus, self.address = usb_bus.bus, usb_bus.new_address()
        self.gone = False
        self.configuration = 0
        self.claims: dict[int, object] = {}
        self.resets = 0
        self.control_transfers = 0
        self.string_reads = 0
        self.strings = {1: "Some vendor", 2: product}
        if serial is not None:
            self.strings[3] = serial
        self.desc_dev = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, vid, pid, 0x0100,
                                    1, 2, 3 if serial is not None else 0, 1)
        intf = bytes((9, 4, 0, 0, 1, interface_class, 0, 0, 0)) + bytes((7, 5, 0x81, 0x03, 8, 0, 10))
        self.desc_cfg = struct.pack("<BBHBBBBB", 9, 2, 9 + len(intf), 1, 1, 0, 0x80, 50) + intf
        self.interfaces = _parse_config(self.desc_cfg)
        usb_bus.plug(self)

    def control(self, req_type: int, req: int, value: int, index: int, data: bytes | int,
                timeout_s: float | None = None) -> bytes:
        if self.gone:
            raise _no_device()
        self.control_transfers += 1
        length = data if isinstance(data, int) else 0
        reply = None
        if req_type == 0x80 and req == 6:  # GET_DESCRIPTOR
            kind, i = value >> 8, value & 0xFF
            if kind == 1:
                reply = self.desc_dev
            elif kind == 2:
                reply = self.desc_cfg
            elif kind == 3:
                self.string_reads += 1
                reply = _LANGIDS if i == 0 else (_string(self.strings[i]) if i in self.strings else None)
        elif req_type == 0x00 and req == 9 and value in (0, 1):  # SET_CONFIGURATION
            self.configuration = value
            reply = b""
        elif req_type == 0x80 and req == 8:  # GET_CONFIGURATION
            reply = bytes((self.configuration,))
        if reply is None:
            raise usb.core.USBError("Pipe error", _PIPE, errno.EPIPE)
        return reply[:length] if length else reply

    def set_configuration(self, value: int) -> None:
        self.control(0x00, 9, value, 0, b"")

    def reset(self) -> None:
        self.resets += 1

    def bulk_out(self, ep: int, data: bytes, timeout_s: float) -> int:
        raise usb.core.USBError("Pipe error", _PIPE, errno.EPIPE)

    def bulk_in(self, ep: int, size: int, timeout_s: float) -> bytes:
        raise usb.core.USBError("Pipe error", _PIPE, errno.EPIPE)

    def unplug(self) -> None:
        self.gone = True
