"""The pod link on a USB vendor-class interface, beside the REPL's CDC.

machine.USBDevice keeps MicroPython's built-in CDC (interfaces 0-1, the REPL)
and appends one interface: class 0xFF, bulk OUT and bulk IN endpoints of 64
bytes (full speed), iInterface "hypnolum link". hostd's pyusb transport claims
it (host/transport/usb.py); no kernel driver binds it, so there is no tty.

It cannot sit beside the CDC link as well (pod/usbcdc.py): the S3's OTG
controller has 5 IN endpoints, EP0 included (docs/transports.md), and the
REPL and the CDC link take four. pod.json's usb_link picks one ("vendor").

The device presents VID 0x303A with PID 0x4021, the PID MicroPython's esp32
port derives for CDC + vendor interfaces (docs/transports.md, "VID and PID"),
and its serial number is the pod id, so udev and hostd can name the pod
before the link starts.

The rings and transfers are pod/usbbulk.py's. An IN burst that ends on a full
packet is closed with a zero-length packet, so the host's 512-byte reads
complete. up() is True while the host has the device configured.
"""
from micropython import const

from pod import usbbulk

VID = const(0x303A)  # Espressif's
PID = const(0x4021)  # 0x4000 | CDC (bit 0) | vendor (bit 5): ports/esp32/mpconfigport.h:244-252
_STR_PRODUCT = const(2)  # the built-in device descriptor's iProduct and iSerialNumber
_STR_SERIAL = const(3)
PRODUCT = "hypnolum pod"


def descriptor(itf, ep, istr):
    """The vendor function: interface itf with bulk OUT ep and bulk IN 0x80|ep."""
    return bytes((
        9, 0x04, itf, 0, 2, 0xFF, 0x00, 0x00, istr,  # vendor interface, 2 endpoints
        7, 0x05, ep, 0x02, usbbulk.PKT, 0, 0,  # bulk OUT
        7, 0x05, 0x80 | ep, 0x02, usbbulk.PKT, 0, 0,  # bulk IN
    ))


def device_descriptor(builtin):
    """The built-in device descriptor with our VID and PID."""
    dev = bytearray(builtin.desc_dev)
    dev[8] = VID & 0xFF
    dev[9] = VID >> 8
    dev[10] = PID & 0xFF
    dev[11] = PID >> 8
    return dev


class Port(usbbulk.BulkPort):
    """The link over the vendor interface's endpoints (usbbulk.BulkPort); up()
    is True while a host has the device configured."""

    def __init__(self, usbd, pod_id):
        b = usbd.BUILTIN_CDC  # the REPL keeps interfaces 0-1 and endpoints 1-2
        itf = b.itf_max
        ep = b.ep_max  # endpoints 0x03 / 0x83
        super().__init__(usbd, itf, ep, 0x80 | ep, True)
        strs = {b.str_max: usbbulk.INTERFACE_NAME, _STR_PRODUCT: PRODUCT, _STR_SERIAL: pod_id}
        self.start(b, device_descriptor(b), usbbulk.config_descriptor(b, descriptor(itf, ep, b.str_max), 1), strs)


def open(usbd, cfg):
    """The pod link on usbd (a machine.USBDevice): a Port whose serial number is cfg.pod_id."""
    return Port(usbd, cfg.pod_id)
