"""USB at its OS boundary: a pyusb backend (the libusb layer) with virtual devices.

A ``VirtualPodDevice`` is a USB device with one vendor-class interface and a
bulk IN/OUT endpoint pair whose bytes go to and from a pod link (the
emulator's pty), so the real firmware answers over "USB". ``FakeBackend``
implements pyusb's ``IBackend`` for such devices: enumeration, descriptors,
string descriptors (serial numbers), configuration, claiming, reset, bulk
transfers with timeouts, and unplugging (I/O then fails with ENODEV, as with
libusb).
"""
from __future__ import annotations

import array
import errno
import os
import select
import threading
import tty
from types import SimpleNamespace

import usb.backend
import usb.core

_TIMEOUT = -7  # LIBUSB_ERROR_TIMEOUT
_NO_DEVICE = -4  # LIBUSB_ERROR_NO_DEVICE
EP_OUT, EP_IN = 0x01, 0x81


class VirtualPodDevice:
    def __init__(self, tty_path: str, vid: int, pid: int, serial: str, bus: int = 1, address: int = 5,
                 packet: int = 64):
        self.tty_path, self.vid, self.pid, self.serial = tty_path, vid, pid, serial
        self.bus, self.address, self.packet = bus, address, packet
        self.plugged = True
        self.resets = 0
        self.claimed: set[int] = set()
        self.configuration = 0
        self.out_transfers: list[int] = []  # sizes of bulk OUT transfers
        self._fd = -1
        self._lock = threading.Lock()

    # the device's end of the pod link
    def _link(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(self._fd)
        return self._fd

    def unplug(self) -> None:
        self.plugged = False
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def replug(self, address: int | None = None) -> None:
        self.address = address or self.address + 1  # a re-enumerated device gets a new address
        self.configuration = 0
        self.claimed.clear()
        self.plugged = True

    def check(self) -> None:
        if not self.plugged:
            raise usb.core.USBError("No such device (it may have been disconnected)", _NO_DEVICE, errno.ENODEV)

    def bulk_out(self, data) -> int:
        self.check()
        with self._lock:
            fd = self._link()
            n = os.write(fd, bytes(data))
        self.out_transfers.append(n)
        return n

    def bulk_in(self, buff, timeout_ms: int) -> int:
        self.check()
        with self._lock:
            fd = self._link()
        ready, _, _ = select.select([fd], [], [], timeout_ms / 1000)
        self.check()
        if not ready:
            raise usb.core.USBTimeoutError("Operation timed out", _TIMEOUT, errno.ETIMEDOUT)
        try:
            data = os.read(fd, min(len(buff), self.packet * 8))
        except BlockingIOError:
            raise usb.core.USBTimeoutError("Operation timed out", _TIMEOUT, errno.ETIMEDOUT) from None
        except OSError:
            raise usb.core.USBError("Input/Output Error", -1, errno.EIO) from None
        buff[: len(data)] = array.array("B", data)
        return len(data)

    def close(self) -> None:
        self.unplug()


def _desc(**kw) -> SimpleNamespace:
    kw.setdefault("extra_descriptors", [])
    return SimpleNamespace(**kw)


class FakeBackend(usb.backend.IBackend):
    def __init__(self, devices: list[VirtualPodDevice]):
        self.devices = devices

    def enumerate_devices(self):
        return [d for d in self.devices if d.plugged]

    def get_device_descriptor(self, dev):
        return _desc(bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
                     bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vid, idProduct=dev.pid, bcdDevice=0x0100,
                     iManufacturer=1, iProduct=2, iSerialNumber=3, bNumConfigurations=1, address=dev.address,
                     bus=dev.bus, port_number=1, port_numbers=(1,), speed=3)

    def get_configuration_descriptor(self, dev, config):
        return _desc(bLength=9, bDescriptorType=2, wTotalLength=32, bNumInterfaces=1, bConfigurationValue=1,
                     iConfiguration=0, bmAttributes=0x80, bMaxPower=50)

    def get_interface_descriptor(self, dev, intf, alt, config):
        if intf != 0 or alt != 0:
            raise IndexError("no such interface")
        return _desc(bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0, bNumEndpoints=2,
                     bInterfaceClass=0xFF, bInterfaceSubClass=0, bInterfaceProtocol=0, iInterface=0)

    def get_endpoint_descriptor(self, dev, ep, intf, alt, config):
        if ep > 1:
            raise IndexError("no such endpoint")
        return _desc(bLength=7, bDescriptorType=5, bEndpointAddress=(EP_OUT, EP_IN)[ep], bmAttributes=0x02,
                     wMaxPacketSize=dev.packet, bInterval=0, bRefresh=0, bSynchAddress=0)

    def open_device(self, dev):
        dev.check()
        return dev

    def close_device(self, handle):
        pass

    def set_configuration(self, handle, value):
        handle.check()
        handle.configuration = value

    def get_configuration(self, handle):
        handle.check()
        return handle.configuration

    def claim_interface(self, handle, intf):
        handle.check()
        handle.claimed.add(intf)

    def release_interface(self, handle, intf):
        handle.claimed.discard(intf)

    def reset_device(self, handle):
        handle.check()
        handle.resets += 1
        handle.configuration = 0
        handle.claimed.clear()

    def is_kernel_driver_active(self, handle, intf):
        return False

    def clear_halt(self, handle, ep):
        pass

    def bulk_write(self, handle, ep, intf, data, timeout):
        assert ep == EP_OUT and intf in handle.claimed, "bulk OUT on an unclaimed interface"
        return handle.bulk_out(data)

    def bulk_read(self, handle, ep, intf, buff, timeout):
        assert ep == EP_IN and intf in handle.claimed, "bulk IN on an unclaimed interface"
        return handle.bulk_in(buff, timeout)

    def ctrl_transfer(self, handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        handle.check()
        if bRequest == 0x06 and wValue >> 8 == 3:  # GET_DESCRIPTOR(STRING)
            index = wValue & 0xFF
            if index == 0:
                payload = (0x0409).to_bytes(2, "little")
            else:
                payload = {1: "hypnolum", 2: "pod", 3: handle.serial}[index].encode("utf-16-le")
            desc = bytes([2 + len(payload), 3]) + payload
            n = min(len(desc), len(data))
            data[:n] = array.array("B", desc[:n])
            return n
        raise usb.core.USBError("Pipe error", -9, errno.EPIPE)
