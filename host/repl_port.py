"""Where a pod's MicroPython REPL answers, seen from the serial port hostd serves the pod on,
and where its link answers, seen from the REPL's (the flash tool's verify step).

* A pod on the ESP32-S3's native USB (MicroPython's TinyUSB device, 303a:4001)
  shows two CDC-ACM ports: its link is interface 2 (firmware/pod/usbcdc.py),
  its REPL interface 0 of the same USB device (docs/board-port.md §13). In
  sysfs, ``class/tty/<tty>/device`` is the interface (``bInterfaceNumber``)
  and its parent the USB device (``idVendor``, ``idProduct``, ``serial``). A
  pod reset into safe mode never opens interface 2: the device enumerates
  again with interface 0 alone, whose tty may get another number, so the
  REPL is looked up again under the same USB device, with the same serial
  number, once the link's tty has gone.
* A pod whose pod.json says ``usb_link: "vendor"`` presents 303a:4021 with
  its pod id as serial number: the REPL on interface 0, the link on a vendor
  interface 2 with no tty, which the flash tool's verify opens with pyusb
  (:class:`UsbLink`).
* A pod on a USB-UART bridge, on a UART or on a pty without a sysfs entry:
  the REPL is on the link's own port (the ESP32's UART0).

Where sysfs is read from is one setting, the environment variable
``HYPNOLUM_SYSFS_ROOT`` (default ``/sys``), read at each call: an emulated
board (emulator/board.py) describes its USB device in a tree of its own.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SYS = Path("/sys")
SYSFS_ROOT_ENV = "HYPNOLUM_SYSFS_ROOT"  # where sysfs is read from (default SYS)
ESPRESSIF = "303a"  # the S3's USB vendor id: its ROM loader, MicroPython, the pod firmware
NATIVE_USB = ("303a", "4001")  # MicroPython's TinyUSB CDC on an ESP32-S3 (docs/board-port.md §2)
VENDOR_USB = ("303a", "4021")  # the same with the pod's vendor interface (firmware/pod/usbvendor.py)
REPL_INTERFACE = 0
LINK_INTERFACE = 2  # the pod's own CDC-ACM function (firmware/pod/usbcdc.py)


def sysfs_root() -> Path:
    """sysfs as the host tools read it: ``$HYPNOLUM_SYSFS_ROOT``, else /sys."""
    return Path(os.environ.get(SYSFS_ROOT_ENV) or SYS)


@dataclass(frozen=True)
class UsbLink:
    """A pod link on a USB vendor interface (no tty): the device to open with pyusb."""

    vid: int
    pid: int
    serial: str  # the pod id (firmware/pod/usbvendor.py)
    device: str  # its sysfs name (bus-port), for messages


LinkFinder = Callable[[], "str | UsbLink | None"]  # the pod link now; None while there is none


class NoRepl(Exception):
    """The pod's REPL cannot be reached from its port; the message says why."""


@dataclass(frozen=True)
class ReplPort:
    link: str  # the port hostd serves the pod on
    usb_device: Path | None = None  # native USB: the device's sysfs directory; None: the REPL is on the link's port
    serial: str = ""  # native USB: the device's serial number

    @property
    def same_port(self) -> bool:
        return self.usb_device is None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _tty_name(port: str) -> str:
    return os.path.basename(os.path.realpath(port))


def _interface(sys_root: Path, tty: str) -> Path | None:
    """The sysfs directory of the USB interface a tty belongs to; None if it is not a USB interface's."""
    device = sys_root / "class" / "tty" / tty / "device"
    if not device.exists():
        return None
    iface = Path(os.path.realpath(device))
    return iface if (iface / "bInterfaceNumber").exists() else None


def locate(link: str, sys_root: Path | None = None) -> ReplPort:
    """Where the REPL of the pod served on ``link`` answers; NoRepl naming why it cannot."""
    sys_root = sys_root or sysfs_root()
    iface = _interface(sys_root, _tty_name(link))
    if iface is None:
        return ReplPort(link)  # a UART or a pty: the REPL shares the port
    usb = iface.parent
    if (_read(usb / "idVendor"), _read(usb / "idProduct")) != NATIVE_USB:
        return ReplPort(link)  # a USB-UART bridge: UART0 carries the REPL
    number = _read(iface / "bInterfaceNumber")
    if number and int(number, 16) == REPL_INTERFACE:
        return ReplPort(link)  # the pod's link is the REPL's own interface
    serial = _read(usb / "serial")
    if not serial:
        raise NoRepl(f"{link}: the pod's USB device {usb.name} reports no serial number, so its REPL "
                     "(interface 0) cannot be told from another board's after the reset into safe mode")
    if find(ReplPort(link, usb, serial), sys_root) is None:
        raise NoRepl(f"{link}: the pod's USB device {usb.name} (serial {serial}) shows no REPL tty "
                     f"(interface {REPL_INTERFACE})")
    return ReplPort(link, usb, serial)


def find(repl: ReplPort, sys_root: Path | None = None) -> str | None:
    """The REPL's port now: the link's own, or the tty of interface 0 of the pod's USB device
    (the same serial number); None while there is none."""
    if repl.usb_device is None:
        return repl.link
    return _tty_of(repl.usb_device, repl.serial, REPL_INTERFACE)


def _tty_of(usb: Path, serial: str, interface: int) -> str | None:
    """/dev/<tty> of interface ``interface`` of the USB device at ``usb`` while it is the one
    with ``serial``; None while there is none."""
    if _read(usb / "serial") != serial:
        return None  # gone, or another board in that USB port
    for iface in sorted(usb.glob(f"{usb.name}:*")):
        number = _read(iface / "bInterfaceNumber")
        if not number or int(number, 16) != interface:
            continue
        ttys = sorted((iface / "tty").glob("*"))
        if ttys:
            return "/dev/" + _devname(ttys[0])
    return None


def _devname(tty: Path) -> str:
    """A tty's path under /dev: DEVNAME in its uevent (as udev reads it), else its name."""
    for line in _read(tty / "uevent").splitlines():
        if line.startswith("DEVNAME="):
            return line[len("DEVNAME="):]
    return tty.name


def _ids(usb: Path) -> tuple[str, str]:
    return _read(usb / "idVendor"), _read(usb / "idProduct")


def link_finder(port: str, sys_root: Path | None = None) -> LinkFinder:
    """For a board reached on ``port`` (its REPL or ROM loader, or its link): a function
    giving the pod link now. On the S3's native USB that is the tty of interface 2 of the
    USB device in the same USB port, or, when the pod presents its vendor interface
    (303a:4021), a :class:`UsbLink` naming the device by its serial number; either exists
    only while the pod's app runs: None until then. On a USB-UART bridge, a UART or a pty
    the link is ``port`` itself. Call this before the board resets: the REPL's tty may come
    back under another name, and the ROM loader's device under another identity."""
    sys_root = sys_root or sysfs_root()
    iface = _interface(sys_root, _tty_name(port))
    if iface is None:
        return lambda: port
    usb = iface.parent
    number = _read(iface / "bInterfaceNumber")
    serial = _read(usb / "serial")
    ids = _ids(usb)
    if ids[0] != ESPRESSIF or (ids == NATIVE_USB and not serial) \
            or (ids == NATIVE_USB and number and int(number, 16) == LINK_INTERFACE):
        return lambda: port  # a bridge, a device that cannot be told from another, or the link itself
    # the ROM loader (303a:1001) has another serial number than MicroPython's CDC: the board
    # is the device in the same USB port; a CDC seen now is this board's while its serial holds
    first = serial if ids == NATIVE_USB else None
    return lambda: _link_now(usb, first)


def _link_now(usb: Path, serial: str | None) -> str | UsbLink | None:
    """The pod link of the device in USB port ``usb`` now (see link_finder)."""
    ids = _ids(usb)
    now = _read(usb / "serial")
    if ids == VENDOR_USB and now:
        return UsbLink(int(ids[0], 16), int(ids[1], 16), now, usb.name)
    if ids != NATIVE_USB or not now:
        return None  # gone, or still the ROM loader
    if serial is not None and now != serial:
        return None  # another board in that USB port
    return _tty_of(usb, now, LINK_INTERFACE)


def link_gone(repl: ReplPort, tty: str, sys_root: Path | None = None) -> bool:
    """True once the link's tty (its kernel name, taken before the reset) no longer belongs to
    the pod's USB device: the pod has reset. Always True when the REPL shares the link's port."""
    if repl.usb_device is None:
        return True
    sys_root = sys_root or sysfs_root()
    iface = _interface(sys_root, tty)
    return iface is None or iface.parent != repl.usb_device
