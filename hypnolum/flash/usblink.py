"""The pod link on its USB vendor interface, for verify: a pod whose pod.json says
``usb_link: "vendor"`` has no link tty (firmware/pod/usbvendor.py).

The device is the one whose serial number sysfs gave for the board's USB port
(host/repl_port.py, :class:`~hypnolum.host.repl_port.UsbLink`); it is found and
its "hypnolum link" interface claimed with hostd's own code
(host/transport/usb.py: ``find_devices``, ``claim_link``). pyusb's backend
(libusb-1.0 by default) is the OS boundary: ``backend`` picks another.
"""
from __future__ import annotations

from typing import Any

from hypnolum.host.repl_port import UsbLink

from .errors import NoUsb, PortBusy

_READ_MS = 50  # a bulk read's timeout: how long one poll waits for the pod


class LinkGone(Exception):
    """The device went away (the pod reset or was unplugged)."""


class VendorLink:
    """The claimed link interface of one pod: raw bytes both ways."""

    def __init__(self, dev: Any, found: tuple, name: str):
        self.dev, self.name = dev, name
        self.intf, self.ep_in, self.ep_out = found
        self._size = max(64, self.ep_in.wMaxPacketSize) * 8

    def write(self, data: bytes) -> None:
        import usb.core

        try:
            self.ep_out.write(data, timeout=1000)
        except usb.core.USBError as exc:
            raise LinkGone(f"{self.name}: write failed: {exc}") from None

    def read(self) -> bytes:
        """What the pod sent, b"" after a short wait without any."""
        import usb.core

        try:
            return bytes(self.ep_in.read(self._size, timeout=_READ_MS))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise LinkGone(f"{self.name}: read failed: {exc}") from None

    def close(self) -> None:
        import usb.core
        import usb.util

        try:
            usb.util.release_interface(self.dev, self.intf.bInterfaceNumber)
            usb.util.dispose_resources(self.dev)
        except usb.core.USBError:
            pass  # gone already


def open_link(link: UsbLink, backend: Any = None) -> VendorLink | None:
    """The pod's link interface claimed, or None while its device is not on the bus yet.
    NoUsb without pyusb or libusb; PortBusy if another program (hostd) has claimed it."""
    name = f"USB device {link.device} ({link.vid:04x}:{link.pid:04x}, serial {link.serial})"
    try:
        from hypnolum.host.transport.base import TransportError
        from hypnolum.host.transport.usb import LinkClaimed, claim_link, find_devices
    except ImportError as exc:
        raise NoUsb(f"{name}: the pod's link is its USB vendor interface (usb_link \"vendor\"), and verifying it "
                    f"needs pyusb: {exc}", step="verify") from None
    try:
        devices = find_devices(link.vid, link.pid, link.serial, backend)
    except TransportError as exc:
        raise NoUsb(f"{name}: the pod's link is its USB vendor interface (usb_link \"vendor\"): {exc}",
                    step="verify") from None
    if not devices:
        return None
    try:
        return VendorLink(devices[0], claim_link(devices[0], name), name)
    except LinkClaimed:
        raise PortBusy(f"{name}: the pod's link interface is claimed by another program: hostd serving this pod? "
                       "stop it (or leave the pod out of its [usb] devices) while flashing", step="verify") from None
    except TransportError as exc:  # gone again (still enumerating), or no access: tried again until the deadline
        raise LinkGone(str(exc)) from None
