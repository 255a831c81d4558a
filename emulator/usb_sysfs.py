"""An emulated board's USB device as Linux's sysfs shows it, for host tools that read sysfs.

The host tools find a native-USB pod's other port through sysfs
(host/repl_port.py): the flash tool the link's tty (or vendor interface) beside
the REPL's, hostd the REPL's beside the link's. An emulated board describes
its one USB device in a tree laid out as the kernel's, under a root of its
own that the tools are pointed at with ``HYPNOLUM_SYSFS_ROOT``::

    <root>/devices/hypnolum-emulator/usb1/1-<n>/        the device in USB port n
        idVendor idProduct serial product busnum devnum
        1-<n>:1.<i>/bInterfaceNumber bInterfaceClass [interface]
        1-<n>:1.<i>/tty/<name>/uevent                  DEVNAME=pts/<k>
        1-<n>:1.<i>/tty/<name>/device -> ../../../1-<n>:1.<i>
    <root>/class/tty/<name> -> ../../devices/.../1-<n>:1.<i>/tty/<name>

A tty is a pty here: ``<name>`` is the basename of its /dev path (``7`` for
/dev/pts/7), and its uevent's DEVNAME the path under /dev, as udev reads a
ttyACM's. Several boards share a root as devices share a bus: each takes the
lowest free port number while it is plugged in.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

BUS = Path("devices") / "hypnolum-emulator" / "usb1"


@dataclass(frozen=True)
class Interface:
    number: int
    cls: int  # bInterfaceClass: 0x02 CDC communication, 0x0A CDC data, 0xFF vendor
    tty: str | None = None  # the /dev path of its tty, if a kernel driver gives it one
    name: str = ""  # its iInterface string, if any


@dataclass(frozen=True)
class Identity:
    vid: int
    pid: int
    serial: str
    product: str
    interfaces: tuple[Interface, ...]


class UsbSysfs:
    """One board's USB device under ``root``: :meth:`show` what enumerates now, :meth:`unplug`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.device: Path | None = None  # <root>/devices/.../1-<n> while plugged in
        self._ttys: list[str] = []  # class/tty entries of the device now
        self._address = 0

    def show(self, ident: Identity) -> None:
        """The device as it enumerates now (the same USB port; a new address each time)."""
        if self.device is None:
            self.device = self._take_port()
        self._clear()
        dev = self.device
        self._address += 1
        for name, value in (("idVendor", f"{ident.vid:04x}"), ("idProduct", f"{ident.pid:04x}"),
                            ("serial", ident.serial), ("product", ident.product), ("busnum", "1"),
                            ("devnum", str(self._address))):
            (dev / name).write_text(value + "\n")
        for itf in ident.interfaces:
            self._interface(dev, itf)

    def unplug(self) -> None:
        """The cable is out: the device and its ttys are gone."""
        if self.device is None:
            return
        self._clear()
        shutil.rmtree(self.device, ignore_errors=True)
        self.device = None

    # ------------------------------------------------------------------ tree
    def _take_port(self) -> Path:
        bus = self.root / BUS
        bus.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            dev = bus / f"1-{n}"
            try:
                dev.mkdir()  # atomic: two boards never take one port
                return dev
            except FileExistsError:
                n += 1

    def _interface(self, dev: Path, itf: Interface) -> None:
        d = dev / f"{dev.name}:1.{itf.number}"
        d.mkdir()
        (d / "bInterfaceNumber").write_text(f"{itf.number:02x}\n")
        (d / "bInterfaceClass").write_text(f"{itf.cls:02x}\n")
        if itf.name:
            (d / "interface").write_text(itf.name + "\n")
        if itf.tty is None:
            return
        name = os.path.basename(itf.tty)
        t = d / "tty" / name
        t.mkdir(parents=True)
        (t / "uevent").write_text(f"DEVNAME={os.path.relpath(itf.tty, '/dev')}\n")
        os.symlink(os.path.relpath(d, t), t / "device")
        entry = self.root / "class" / "tty" / name
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(t, entry.parent), tmp)
        os.replace(tmp, entry)  # a stale entry of an earlier run's pty of that number is replaced
        self._ttys.append(name)

    def _clear(self) -> None:
        for name in self._ttys:
            with contextlib.suppress(FileNotFoundError):
                (self.root / "class" / "tty" / name).unlink()
        self._ttys.clear()
        if self.device is None:
            return
        for d in self.device.glob(f"{self.device.name}:*"):
            shutil.rmtree(d, ignore_errors=True)
