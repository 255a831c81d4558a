"""USB at its OS boundary: a pyusb backend (the libusb layer) over emulated pods' USB devices.

An emulated pod whose pod.json has ``usb_link: "vendor"`` presents its whole USB
device on ``<pod dir>/usb.sock`` (emulator/mpy/usbcable.py): the descriptors its
firmware gave ``machine.USBDevice.config`` and the endpoints it submits transfers
on. :class:`UsbBus` plays the host controller and the kernel: it plugs each such
device in (connects), enumerates it as Linux does (bus reset, GET_DESCRIPTOR,
SET_CONFIGURATION 1), binds cdc-acm to the REPL's CDC interfaces, and keeps each
interface's claim. :meth:`UsbBus.backend` gives a pyusb ``IBackend`` (one per
program, as each has its own libusb context): enumeration from the device's own
descriptors, string descriptors read from the device, configuration, claiming
(another program's claim fails with EBUSY), reset, control transfers, and bulk
transfers packet by packet with the device's flow control (NAK) and libusb's
timeouts. A bulk read completes at its length or at a short packet; one that
times out is cancelled and what it had received is lost, as pyusb's libusb-1.0
backend drops it (counted in ``lost_bytes``). Unplugging shuts the connection
down, so the device sees it at once whatever is in flight: I/O then fails with
ENODEV, as with libusb.

Timeouts are the ones the real layers use: the kernel's enumeration and the
requests libusb hands to it (SET_CONFIGURATION, SET_INTERFACE, reset) give each
control transfer 5 s (``USB_CTRL_GET_TIMEOUT`` / ``USB_CTRL_SET_TIMEOUT`` in
Linux's include/linux/usb.h); a program's own control transfer has the timeout
it passes (pyusb's default is 1000 ms; 0 is no limit, as in libusb). A control
transfer that timed out is over: its late answer is never taken for the next
one's. A device that does not take the connection within ``_CONNECT_S`` is not
on the bus at this scan.
"""
from __future__ import annotations

import array
import errno
import queue
import socket
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import usb.backend
import usb.core

H_RESET, H_SETUP, H_OUT, H_IN, H_CANCEL = 1, 2, 3, 4, 5
D_CTRL, D_ACK, D_NAK, D_DATA, D_CANCELLED = 0x81, 0x82, 0x83, 0x84, 0x85
_TIMEOUT, _BUSY, _NO_DEVICE, _PIPE = -7, -6, -4, -9  # LIBUSB_ERROR_*
_HDR = struct.Struct("<BBH")
_PKT = 64
_KERNEL_CLASSES = (0x02, 0x0A)  # cdc-acm binds the REPL's communication and data interfaces
_NAK_RETRY_S = 0.001  # a NAKed OUT packet is sent again in the next frame
_KERNEL_CTRL_S = 5.0  # USB_CTRL_GET_TIMEOUT / USB_CTRL_SET_TIMEOUT (include/linux/usb.h): 5000 ms
_CONNECT_S = 1.0  # a device that has not taken the connection by then is not plugged in at this scan


def _no_device() -> usb.core.USBError:
    return usb.core.USBError("No such device (it may have been disconnected)", _NO_DEVICE, errno.ENODEV)


def _timed_out() -> usb.core.USBTimeoutError:
    return usb.core.USBTimeoutError("Operation timed out", _TIMEOUT, errno.ETIMEDOUT)


def _desc(**kw) -> SimpleNamespace:
    kw.setdefault("extra_descriptors", [])
    return SimpleNamespace(**kw)


def _parse_config(cfg: bytes) -> list[tuple[SimpleNamespace, list[SimpleNamespace]]]:
    """The interfaces of a configuration descriptor, in order, each with its endpoints."""
    out: list[tuple[SimpleNamespace, list[SimpleNamespace]]] = []
    i = cfg[0]
    while i + 1 < len(cfg):
        ln, kind = cfg[i], cfg[i + 1]
        if ln < 2:
            raise ValueError(f"configuration descriptor: length {ln} at byte {i}")
        d = cfg[i:i + ln]
        if kind == 4:
            out.append((_desc(bLength=ln, bDescriptorType=4, bInterfaceNumber=d[2], bAlternateSetting=d[3],
                              bNumEndpoints=d[4], bInterfaceClass=d[5], bInterfaceSubClass=d[6],
                              bInterfaceProtocol=d[7], iInterface=d[8]), []))
        elif kind == 5 and out:
            out[-1][1].append(_desc(bLength=ln, bDescriptorType=5, bEndpointAddress=d[2], bmAttributes=d[3],
                                    wMaxPacketSize=d[4] | d[5] << 8, bInterval=d[6], bRefresh=0, bSynchAddress=0))
        i += ln
    return out


class EmulatedDevice:
    """One plugged-in emulated pod: its connection, descriptors and kernel state."""

    def __init__(self, pod_id: str, sock: socket.socket, bus: int, address: int):
        self.pod_id, self.sock, self.bus, self.address = pod_id, sock, bus, address
        self.gone = False
        self.configuration = 0
        self.claims: dict[int, object] = {}  # interface number -> the backend (program) holding it
        self.resets = 0
        self.lost_bytes = 0  # received by bulk reads that timed out
        self.in_bytes = 0  # bulk IN bytes the host took, and their packets
        self.in_packets = 0
        self.out_bytes = 0
        self.out_packets = 0
        self._send_lock = threading.Lock()
        self._ctrl_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._ctrl: queue.Queue[bytes | None] = queue.Queue()
        self._ctrl_late = 0  # answers still to come to control transfers that timed out
        self._out: queue.Queue[int | None] = queue.Queue()
        self._in = threading.Condition()
        self._in_pending = False
        self._in_want = 0
        self._in_data = bytearray()
        self._in_done = False
        self._in_cancelled = False
        self.desc_dev = b""
        self.desc_cfg = b""
        self.interfaces: list = []
        self._reader = threading.Thread(target=self._read_loop, name=f"usb {pod_id}", daemon=True)
        self._reader.start()

    # -- the wire --------------------------------------------------------------
    def _send(self, kind: int, ep: int = 0, payload: bytes = b"") -> None:
        if self.gone:
            raise _no_device()
        try:
            with self._send_lock:
                self.sock.sendall(_HDR.pack(kind, ep, len(payload)) + payload)
        except OSError:
            self._lost()
            raise _no_device() from None

    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _read_loop(self) -> None:
        while True:
            hdr = self._recv_exact(4)
            if hdr is None:
                break
            kind, ep, n = _HDR.unpack(hdr)
            payload = self._recv_exact(n) if n else b""
            if payload is None:
                break
            if kind == D_CTRL:
                self._ctrl.put(payload)
            elif kind in (D_ACK, D_NAK):
                self._out.put(kind)
            elif kind == D_DATA:
                with self._in:
                    self._in_data += payload
                    self.in_packets += max(1, (n + _PKT - 1) // _PKT)
                    if n % _PKT or n == 0 or len(self._in_data) >= self._in_want:
                        self._in_done = True
                    self._in.notify_all()
            elif kind == D_CANCELLED:
                with self._in:
                    self._in_cancelled = True
                    self._in.notify_all()
        self._lost()

    def _lost(self) -> None:
        if self.gone:
            return
        self.gone = True
        try:  # close() alone leaves the connection up while the reader thread sits in recv()
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the device closed it first
        self.sock.close()
        self._ctrl.put(None)
        self._out.put(None)
        with self._in:
            self._in.notify_all()

    def unplug(self) -> None:
        self._lost()

    # -- transfers ---------------------------------------------------------------
    def control(self, req_type: int, req: int, value: int, index: int, data: bytes | int,
                timeout_s: float | None = _KERNEL_CTRL_S) -> bytes:
        """One control transfer: OUT data (bytes) or the IN length (int); the IN data stage.
        ``timeout_s`` None: no limit."""
        out = data if isinstance(data, (bytes, bytearray)) else b""
        length = data if isinstance(data, int) else len(out)
        with self._ctrl_lock:
            self._send(H_SETUP, 0, struct.pack("<BBHHH", req_type, req, value, index, length) + bytes(out))
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while True:  # the device answers every SETUP, in order: late answers come first
                try:
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    reply = self._ctrl.get(timeout=wait)
                except queue.Empty:
                    self._ctrl_late += 1
                    raise _timed_out() from None
                if reply is None or not self._ctrl_late:
                    break
                self._ctrl_late -= 1
        if reply is None:
            raise _no_device()
        if reply[0]:
            raise usb.core.USBError("Pipe error", _PIPE, errno.EPIPE)
        return reply[1:]

    def enumerate(self) -> None:
        """What the kernel does when a device appears (and after a port reset)."""
        self._send(H_RESET)
        self.control(0x00, 5, self.address, 0, b"")  # SET_ADDRESS
        self.desc_dev = self.control(0x80, 6, 0x0100, 0, 18)
        head = self.control(0x80, 6, 0x0200, 0, 9)
        self.desc_cfg = self.control(0x80, 6, 0x0200, 0, head[2] | head[3] << 8)
        self.interfaces = _parse_config(self.desc_cfg)
        self.set_configuration(1)  # usb_choose_configuration: the first

    def set_configuration(self, value: int) -> None:
        self.control(0x00, 9, value, 0, b"")
        self.configuration = value

    def reset(self) -> None:
        """libusb_reset_device: a port reset, then the same address and configuration again."""
        config = self.configuration
        self.resets += 1
        self._send(H_RESET)
        with self._in:
            self._in_pending = False
        self.control(0x00, 5, self.address, 0, b"")
        if config:
            self.set_configuration(config)

    def bulk_out(self, ep: int, data: bytes, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        off = 0
        while off < len(data) or not data:
            pkt = bytes(data[off:off + _PKT])
            self._send(H_OUT, ep, pkt)
            answer = self._out.get()
            if answer is None:
                raise _no_device()
            if answer == D_NAK:
                if time.monotonic() > deadline:
                    raise _timed_out()
                time.sleep(_NAK_RETRY_S)
                continue
            off += len(pkt)
            self.out_bytes += len(pkt)
            self.out_packets += 1
            if not data:
                break
        return off

    def bulk_in(self, ep: int, size: int, timeout_s: float) -> bytes:
        with self._read_lock, self._in:
            if not self._in_pending:  # a new read; one that timed out was cancelled
                self._in_pending, self._in_want, self._in_done, self._in_cancelled = True, size, False, False
                self._in_data = bytearray()
                self._send(H_IN, ep, struct.pack("<H", size))
            done = self._in.wait_for(lambda: self._in_done or self.gone, timeout_s or None)
            if not done:
                self._send(H_CANCEL, ep)
                self._in.wait_for(lambda: self._in_cancelled or self.gone, 1.0)
            self._in_pending = False
            if self._in_done:
                data = bytes(self._in_data)
                self.in_bytes += len(data)
                return data
            self.lost_bytes += len(self._in_data)
            if self.gone:
                raise _no_device()
            raise _timed_out()


class UsbBus:
    """The host's USB bus with every emulated pod under ``root`` that presents a USB device,
    and the devices that are not pods plugged in with :meth:`plug` (tests/helpers/usb_devices.py)."""

    def __init__(self, root: str | Path, bus: int = 1):
        self.root = Path(root)
        self.bus = bus
        self.devices: dict[str, EmulatedDevice] = {}  # pod id -> plugged-in device
        self.others: list = []  # plugged-in devices that are not emulated pods
        self.unplugged: set[str] = set()
        self._next_address = 5
        self._lock = threading.Lock()

    def scan(self) -> list[EmulatedDevice]:
        """Plug in and enumerate every pod presenting a device; the devices present."""
        with self._lock:
            for path in sorted(self.root.glob("*/usb.sock")):
                pod_id = path.parent.name
                dev = self.devices.get(pod_id)
                if pod_id in self.unplugged or (dev is not None and not dev.gone):
                    continue
                self.devices.pop(pod_id, None)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(_CONNECT_S)  # a full backlog would block connect() for good
                try:
                    sock.connect(str(path))
                except OSError:  # a pod that is not running (or not taking it): nothing on the bus
                    sock.close()
                    continue
                sock.settimeout(None)
                dev = EmulatedDevice(pod_id, sock, self.bus, self._next_address)
                self._next_address += 1
                try:
                    dev.enumerate()
                except usb.core.USBError:
                    dev.unplug()
                    continue
                self.devices[pod_id] = dev
            return [d for d in [*self.devices.values(), *self.others] if not d.gone]

    def new_address(self) -> int:
        with self._lock:
            self._next_address += 1
            return self._next_address - 1

    def plug(self, device) -> None:
        """Plug in a device that is not a pod (already enumerated: it answers from its descriptors)."""
        self.others.append(device)

    def unplug(self, pod_id: str) -> None:
        """Pull the cable: the device is gone until replug()."""
        self.unplugged.add(pod_id)
        dev = self.devices.pop(pod_id, None)
        if dev is not None:
            dev.unplug()

    def replug(self, pod_id: str) -> None:
        """Plug the cable in again: found (with a new address) at the next enumeration."""
        self.unplugged.discard(pod_id)

    def backend(self) -> "EmulatedBackend":
        """A libusb context of one program on this bus."""
        return EmulatedBackend(self)

    def close(self) -> None:
        for dev in [*self.devices.values(), *self.others]:
            dev.unplug()
        self.devices.clear()
        self.others.clear()


class EmulatedBackend(usb.backend.IBackend):
    """pyusb's ``IBackend`` for one program, over :class:`UsbBus`."""

    def __init__(self, bus: UsbBus):
        self.bus = bus
        self.enumerations = 0  # libusb_get_device_list calls

    def enumerate_devices(self):
        self.enumerations += 1
        return self.bus.scan()

    def get_device_descriptor(self, dev):
        d = dev.desc_dev
        vid, pid, bcd = struct.unpack_from("<HHH", d, 8)
        return _desc(bLength=18, bDescriptorType=1, bcdUSB=d[2] | d[3] << 8, bDeviceClass=d[4],
                     bDeviceSubClass=d[5], bDeviceProtocol=d[6], bMaxPacketSize0=d[7], idVendor=vid, idProduct=pid,
                     bcdDevice=bcd, iManufacturer=d[14], iProduct=d[15], iSerialNumber=d[16],
                     bNumConfigurations=d[17], address=dev.address, bus=dev.bus, port_number=1,
                     port_numbers=(1,), speed=2)  # LIBUSB_SPEED_FULL

    def get_configuration_descriptor(self, dev, config):
        if config != 0:
            raise IndexError("no such configuration")
        c = dev.desc_cfg
        return _desc(bLength=9, bDescriptorType=2, wTotalLength=c[2] | c[3] << 8, bNumInterfaces=c[4],
                     bConfigurationValue=c[5], iConfiguration=c[6], bmAttributes=c[7], bMaxPower=c[8])

    def _interface(self, dev, intf, alt):
        if alt != 0 or intf >= len(dev.interfaces):
            raise IndexError("no such interface")
        return dev.interfaces[intf]

    def get_interface_descriptor(self, dev, intf, alt, config):
        return self._interface(dev, intf, alt)[0]

    def get_endpoint_descriptor(self, dev, ep, intf, alt, config):
        eps = self._interface(dev, intf, alt)[1]
        if ep >= len(eps):
            raise IndexError("no such endpoint")
        return eps[ep]

    def open_device(self, dev):
        if dev.gone:
            raise _no_device()
        return dev

    def close_device(self, handle):
        pass

    def set_configuration(self, handle, value):
        handle.set_configuration(value)

    def get_configuration(self, handle):
        return handle.control(0x80, 8, 0, 0, 1)[0]

    def set_interface_altsetting(self, handle, intf, altsetting):
        handle.control(0x01, 11, altsetting, intf, b"")

    def claim_interface(self, handle, intf):
        if handle.gone:
            raise _no_device()
        holder = handle.claims.setdefault(intf, self)
        if holder is not self:
            raise usb.core.USBError("Resource busy", _BUSY, errno.EBUSY)

    def release_interface(self, handle, intf):
        if handle.claims.get(intf) is self:
            del handle.claims[intf]

    def reset_device(self, handle):
        handle.reset()

    def is_kernel_driver_active(self, handle, intf):
        for desc, _eps in handle.interfaces:
            if desc.bInterfaceNumber == intf:
                return desc.bInterfaceClass in _KERNEL_CLASSES
        return False

    def detach_kernel_driver(self, handle, intf):
        raise usb.core.USBError("Operation not supported", -12, errno.ENOSYS)

    def clear_halt(self, handle, ep):
        pass

    def _claimed(self, handle, intf):
        if handle.gone:
            raise _no_device()
        if handle.claims.get(intf) is not self:
            raise usb.core.USBError(f"interface {intf} not claimed", _BUSY, errno.EBUSY)

    def bulk_write(self, handle, ep, intf, data, timeout):
        self._claimed(handle, intf)
        return handle.bulk_out(ep, bytes(data), timeout / 1000)

    def bulk_read(self, handle, ep, intf, buff, timeout):
        self._claimed(handle, intf)
        data = handle.bulk_in(ep, len(buff), timeout / 1000)
        buff[:len(data)] = array.array("B", data)
        return len(data)

    def ctrl_transfer(self, handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        timeout_s = timeout / 1000 or None  # the caller's; 0: no limit (libusb)
        if bmRequestType & 0x80:
            got = handle.control(bmRequestType, bRequest, wValue, wIndex, len(data), timeout_s)
            data[:len(got)] = array.array("B", got)
            return len(got)
        handle.control(bmRequestType, bRequest, wValue, wIndex, bytes(data or b""), timeout_s)
        return len(data or b"")
