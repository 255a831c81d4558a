"""USB transport: a pod's vendor interface with a bulk IN and a bulk OUT endpoint (pyusb).

A pod whose pod.json has ``usb_link: "vendor"`` presents its link as a
vendor-class interface (class 0xFF) named "hypnolum link" (its iInterface
string) beside the REPL's CDC (firmware/pod/usbvendor.py, docs/transports.md).
``UsbScanner`` discovers devices by VID:PID (and serial number, the pod id, if
configured) every ``scan_interval_s`` and starts a session on each new one, so
plugging a pod in is enough; a device that vanishes ends its session. Its idle
cost is bounded: one enumeration of the bus per scan, whatever the number of
config entries (libusb answers it and the device descriptors from its cache,
no transfer to any device); a device is asked for anything only if its VID:PID
is configured, and then only for its serial number, once while it stays
plugged in. On open
the device is configured, the link interface claimed, then the device reset
(``reset_on_open``) so a pod left mid-frame by a previous host starts clean. A
device with no such interface, or whose interface another program (another
hostd) has claimed, is refused with a message saying so, and not reset.

pyusb is blocking; each transfer runs in a worker thread with a short timeout
so a closed transport is noticed quickly. pyusb's backend (libusb-1.0 by
default) is the OS boundary: pass another ``backend`` to use a different one.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable

from .base import Transport, TransportClosed, TransportError

log = logging.getLogger(__name__)

_POLL_MS = 100  # bulk read timeout: how fast a close is noticed
_WRITE_MS = 1000
_NO_BACKEND_S = 60.0  # how often a missing libusb is looked for again
_VENDOR_CLASS = 0xFF
INTERFACE_NAME = "hypnolum link"  # the link interface's iInterface (firmware/pod/usbbulk.py)


def device_key(dev) -> str:
    return f"{dev.bus}-{dev.address}"


def _interface_name(dev, intf) -> str | None:
    import usb.core
    import usb.util

    if not intf.iInterface:
        return None
    try:
        return usb.util.get_string(dev, intf.iInterface)
    except (usb.core.USBError, ValueError):
        return None


def _link_interface(dev, cfg):
    """(interface, IN endpoint, OUT endpoint) of the pod's link: the vendor-class interface
    named INTERFACE_NAME with bulk endpoints both ways; None if the device has none."""
    import usb.util

    for intf in cfg:
        if intf.bInterfaceClass != _VENDOR_CLASS or _interface_name(dev, intf) != INTERFACE_NAME:
            continue
        ep_in = ep_out = None
        for ep in intf:
            if usb.util.endpoint_type(ep.bmAttributes) != usb.util.ENDPOINT_TYPE_BULK:
                continue
            if usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN:
                ep_in = ep_in or ep
            else:
                ep_out = ep_out or ep
        if ep_in is not None and ep_out is not None:
            return intf, ep_in, ep_out
    return None


class LinkClaimed(TransportError):
    """Another program has claimed the pod's link interface."""


def find_devices(vid: int, pid: int, serial: str | None = None, backend=None) -> list:
    """The USB devices with this VID:PID (and serial number, if given) on ``backend``'s bus
    (None: libusb-1.0); TransportError if pyusb has no backend."""
    import usb.core

    def serial_ok(dev) -> bool:
        if serial is None:
            return True
        try:
            return dev.serial_number == serial
        except (usb.core.USBError, ValueError):
            return False

    return enumerate_bus(backend, idVendor=vid, idProduct=pid, custom_match=serial_ok)


def enumerate_bus(backend=None, **match) -> list:
    """The devices on ``backend``'s bus (None: libusb-1.0) that pyusb's ``match`` keywords
    select; TransportError if pyusb has no backend."""
    import usb.core

    try:
        return list(usb.core.find(find_all=True, backend=backend, **match))
    except usb.core.NoBackendError:
        raise TransportError("USB: no backend (install libusb-1.0: `make setup`)") from None


def claim_link(dev, name: str) -> tuple:
    """Configure ``dev`` and claim the pod link's interface: (interface, IN endpoint, OUT
    endpoint). TransportError (``name`` first) if it has none, or another program has it."""
    import usb.core
    import usb.util

    try:
        try:
            cfg = dev.get_active_configuration()
        except usb.core.USBError:
            dev.set_configuration()
            cfg = dev.get_active_configuration()
        found = _link_interface(dev, cfg)
        if found is None:
            raise TransportError(f"{name}: no vendor interface {INTERFACE_NAME!r} with bulk IN and OUT "
                                 "(is the pod's usb_link \"vendor\"? docs/transports.md)")
        n = found[0].bInterfaceNumber
        try:
            if dev.is_kernel_driver_active(n):
                dev.detach_kernel_driver(n)
        except (NotImplementedError, usb.core.USBError):
            pass  # not supported by this backend or OS
        try:
            usb.util.claim_interface(dev, n)
        except usb.core.USBError as exc:
            if exc.errno == errno.EBUSY:
                raise LinkClaimed(f"{name}: the pod's link interface {n} is claimed by another "
                                  "program (another hostd?)") from None
            raise
        return found
    except usb.core.USBError as exc:
        if exc.errno == errno.EACCES:
            raise TransportError(f"{name}: cannot open: permission denied: install the udev rule "
                                 "host/deploy/60-hypnolum.rules and be in group plugdev (docs/transports.md)") from None
        raise TransportError(f"{name}: cannot open: {exc}") from None


class UsbTransport(Transport):
    def __init__(self, device, reset_on_open: bool = True):
        self.dev = device
        self.name = f"usb:{device_key(device)}"
        self.reset_on_open = reset_on_open
        self._intf = self._in = self._out = None
        self._closed = False
        # A thread each for reads and writes, the transport's own: a read blocks up to
        # _POLL_MS, and in asyncio's shared pool (cpu count + 4 threads) the reads of
        # many pods held the writes of the rest behind them (tens of ms a command).
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name} read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name} write")

    def _open(self) -> None:
        import usb.core

        self._intf, self._in, self._out = claim_link(self.dev, self.name)
        if self.reset_on_open:  # only once the interface is ours: never under another program's session
            try:
                self.dev.reset()  # libusb restores the configuration and this claim
            except usb.core.USBError as exc:
                raise TransportError(f"{self.name}: cannot open: {exc}") from None

    async def open(self) -> None:
        await asyncio.to_thread(self._open)
        log.info("%s: interface %d, bulk IN %#04x / OUT %#04x", self.name, self._intf.bInterfaceNumber,
                 self._in.bEndpointAddress, self._out.bEndpointAddress)

    def _read(self) -> bytes:
        import usb.core

        size = max(64, self._in.wMaxPacketSize) * 8
        while not self._closed:
            try:
                data = self._in.read(size, timeout=_POLL_MS)
            except usb.core.USBTimeoutError:
                continue
            except usb.core.USBError as exc:
                if exc.errno in (errno.ETIMEDOUT,):
                    continue
                log.info("%s: read ended: %s", self.name, exc)  # unplugged (ENODEV), pipe error
                return b""
            if len(data):
                return bytes(data)
        return b""

    async def read(self) -> bytes:
        if self._closed:
            return b""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, self._read)
        except RuntimeError:  # its thread was let go: closed meanwhile
            return b""

    def _write(self, data: bytes) -> None:
        import usb.core

        view = memoryview(data)
        while view:
            if self._closed:
                raise TransportClosed(f"{self.name}: closed")
            try:
                n = self._out.write(bytes(view), timeout=_WRITE_MS)
            except usb.core.USBError as exc:
                raise TransportClosed(f"{self.name}: write failed: {exc}") from None
            view = view[n:]

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed(f"{self.name}: closed")
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._write, data)
        except RuntimeError:  # its thread was let go: closed meanwhile
            raise TransportClosed(f"{self.name}: closed") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        import usb.core
        import usb.util

        def release() -> None:
            try:
                if self._intf is not None:
                    usb.util.release_interface(self.dev, self._intf.bInterfaceNumber)
                usb.util.dispose_resources(self.dev)
            except usb.core.USBError as exc:
                log.debug("%s: close: %s", self.name, exc)

        await asyncio.to_thread(release)
        for pool in (self._reader, self._writer):
            pool.shutdown(wait=False)  # a read under way ends within _POLL_MS: it sees _closed


class UsbScanner:
    """Start a session on every USB device matching the config, as it appears."""

    def __init__(self, cfg, serve: Callable[[Transport], Awaitable[None]], backend=None):
        self.cfg = cfg
        self.serve = serve
        self.backend = backend
        self.active: dict[str, asyncio.Task] = {}
        self._serials: dict[str, str | None] = {}  # device key -> its serial number, while plugged in

    def find(self) -> list:
        """The devices the config names, from one enumeration of the bus."""
        devices = enumerate_bus(self.backend)
        present = {device_key(dev) for dev in devices}
        for key in self._serials.keys() - present:  # unplugged: a device there later is another
            del self._serials[key]
        return [dev for dev in devices if self._wanted(dev)]

    def _wanted(self, dev) -> bool:
        for match in self.cfg.devices:
            if dev.idVendor != match.vid or dev.idProduct != match.pid:
                continue
            if match.serial is None or self._serial(dev, device_key(dev)) == match.serial:
                return True
        return False

    def _serial(self, dev, key: str) -> str | None:
        """The device's serial number (string descriptor), read once while it is plugged in;
        a read that fails is tried again at the next scan."""
        import usb.core

        if key not in self._serials:
            try:
                self._serials[key] = dev.serial_number
            except (usb.core.USBError, ValueError) as exc:
                log.debug("usb %s: serial number unreadable (%s); asked again at the next scan", key, exc)
                return None
        return self._serials[key]

    async def run(self) -> None:
        try:
            while True:
                try:
                    devices = await asyncio.to_thread(self.find)
                except TransportError as exc:  # no libusb: the other pods go on; looked for again later
                    log.error("%s; looking again in %.0f s", exc, _NO_BACKEND_S)
                    await asyncio.sleep(_NO_BACKEND_S)
                    continue
                for dev in devices:
                    key = device_key(dev)
                    if key not in self.active:
                        log.debug("usb %s appeared", key)
                        self.active[key] = asyncio.create_task(self._serve(key, dev), name=f"usb {key}")
                await asyncio.sleep(self.cfg.scan_interval_s)
        finally:
            for task in self.active.values():
                task.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)

    async def _serve(self, key: str, dev) -> None:
        try:
            await self.serve(UsbTransport(dev, self.cfg.reset_on_open))
        except Exception:
            log.exception("usb %s: session failed", key)
        finally:
            self.active.pop(key, None)
