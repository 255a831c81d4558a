"""The pod link on a USB CDC-ACM interface of its own, beside the REPL's.

machine.USBDevice keeps MicroPython's built-in CDC (interfaces 0-1, the REPL)
and appends this function after it: an IAD, a communication interface with
its notification endpoint and a data interface with bulk OUT/IN endpoints
(docs/board-port.md, "Pod link"). The host sees a second /dev/ttyACM. Its
bytes never pass through stdio, so they are not copied to UART0 at 115200,
0x03 is plain data and the DTR/RTS bootloader sequence does nothing here.

The rings and transfers are pod/usbbulk.py's; this module adds the CDC
descriptors and class requests. pod.json's usb_link picks it ("cdc").
"""
from micropython import const

from pod import usbbulk

_PKT = usbbulk.PKT
_REQ_TYPE_CLASS = const(0x20)
_SET_LINE_CODING = const(0x20)
_GET_LINE_CODING = const(0x21)
_SET_CONTROL_LINE_STATE = const(0x22)
_SEND_BREAK = const(0x23)

INTERFACE_NAME = usbbulk.INTERFACE_NAME

def descriptor(itf, ep, istr):
    """The CDC-ACM function: IAD, comm interface itf, data interface itf+1,
    notification endpoint 0x80|ep, bulk OUT ep+1 and IN 0x80|(ep+1)."""
    return bytes((
        8, 0x0B, itf, 2, 0x02, 0x02, 0x00, istr,  # IAD: 2 interfaces, CDC / ACM
        9, 0x04, itf, 0, 1, 0x02, 0x02, 0x00, istr,  # comm interface, 1 endpoint
        5, 0x24, 0x00, 0x20, 0x01,  # CDC header, bcdCDC 1.20
        5, 0x24, 0x01, 0x00, itf + 1,  # call management: data on itf+1
        4, 0x24, 0x02, 0x02,  # ACM: line coding and control line state
        5, 0x24, 0x06, itf, itf + 1,  # union: comm itf, data itf+1
        7, 0x05, 0x80 | ep, 0x03, 8, 0, 16,  # notification: interrupt IN, 8 B
        9, 0x04, itf + 1, 0, 2, 0x0A, 0x00, 0x00, 0,  # data interface, 2 endpoints
        7, 0x05, ep + 1, 0x02, _PKT, 0, 0,  # bulk OUT
        7, 0x05, 0x80 | (ep + 1), 0x02, _PKT, 0, 0,  # bulk IN
    ))


class Port(usbbulk.BulkPort):
    """The link over the CDC data endpoints (usbbulk.BulkPort); up() is DTR: a
    host has the tty open."""

    def __init__(self, usbd):
        b = usbd.BUILTIN_CDC  # the REPL keeps interfaces 0-1 and endpoints 1-2
        itf = b.itf_max
        ep = b.ep_max
        super().__init__(usbd, itf, ep + 1, 0x80 | (ep + 1), False)
        self._coding = bytearray(b"\x00\xc2\x01\x00\x00\x00\x08")  # 115200 8N1 until the host sets one
        self.dtr = False  # the host has the port open (SET_CONTROL_LINE_STATE)
        self.start(b, b.desc_dev, usbbulk.config_descriptor(b, descriptor(itf, ep, b.str_max), 2),
                   {b.str_max: INTERFACE_NAME})

    def up(self):
        return self._open and self.dtr

    def _on_reset(self):
        super()._on_reset()
        self.dtr = False  # the host opens the tty again after a bus reset

    def _on_control(self, stage, req):
        if req[0] & 0x60 != _REQ_TYPE_CLASS or (req[4] | req[5] << 8) != self._itf:
            return False  # not ours: stall
        if stage != usbbulk.STAGE_SETUP:
            return True
        r = req[1]
        if r == _SET_LINE_CODING or r == _GET_LINE_CODING:
            return self._coding  # the baud rate means nothing on USB; kept for the host to read back
        if r == _SET_CONTROL_LINE_STATE:
            self.dtr = bool(req[2] & 1)
            return True
        return r == _SEND_BREAK


def open(usbd, cfg=None):
    """The pod link on usbd (a machine.USBDevice): a Port."""
    return Port(usbd)
