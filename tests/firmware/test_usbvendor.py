# The pod link's USB vendor interface (pod/usbvendor.py over pod/usbbulk.py) under
# MicroPython, against a fake machine.USBDevice: the test plays TinyUSB and the
# host, calling the callbacks as mp_usbd_runtime.c does.
from pod import config, usbcdc, usbvendor
from test_usbcdc import FakeUSB, settle

EP_OUT = 0x03
EP_IN = 0x83
MAX_IN_EPS = 5  # the S3's OTG controller, EP0 included (docs/transports.md)


class VendorUSB(FakeUSB):
    def enumerate(self):
        self.reset()
        self.open_itf(memoryview(self.cfg)[75:])  # the vendor interface: no IAD

    def complete_in(self):
        """The host takes the pending IN transfer; its length (None: none pending)."""
        buf = self.pending.pop(EP_IN, None)
        if buf is None:
            return None
        self.xfer(EP_IN, 0, len(buf))
        settle()
        return len(buf)


def make(open_=True, pod_id="pod-usb-7"):
    cfg = config.Config()
    assert cfg.set("pod_id", pod_id) and cfg.set("usb_link", "vendor")
    usb = VendorUSB()
    port = usbvendor.open(usb, cfg)
    if open_:
        usb.enumerate()
    return usb, port


def _endpoints(cfg):
    return [(cfg[i + 2], cfg[i + 3], cfg[i + 4]) for i in range(9, len(cfg) - 6) if cfg[i] == 7 and cfg[i + 1] == 5]


def _in_endpoints(cfg):
    return 1 + sum(1 for ep, _, _ in _endpoints(cfg) if ep & 0x80)  # EP0 IN too


def test_descriptors_add_a_vendor_interface_with_the_pod_id_as_serial_number():
    usb, port = make(False)
    cfg = usb.cfg
    assert usb.builtin_driver is usb.BUILTIN_CDC and usb.is_active
    assert len(cfg) == 75 + 23 and cfg[2] | cfg[3] << 8 == len(cfg) and cfg[4] == 3
    assert bytes(cfg[75:84]) == bytes((9, 4, 2, 0, 2, 0xFF, 0, 0, 5))  # interface 2, class 0xFF, iInterface 5
    assert _endpoints(cfg[75 - 9:]) == [(EP_OUT, 2, 64), (EP_IN, 2, 64)]
    dev = usbvendor.device_descriptor(usb.BUILTIN_CDC)
    assert len(dev) == 18 and dev[8] | dev[9] << 8 == 0x303A and dev[10] | dev[11] << 8 == 0x4021
    assert usb.strs == {5: "hypnolum link", 2: "hypnolum pod", 3: "pod-usb-7"}


def test_the_s3_has_in_endpoints_for_one_link_function_beside_the_repl():
    # the REPL's CDC (0x81, 0x82) and EP0 leave two: the CDC link takes both, the vendor link one
    vendor = _in_endpoints(usbvendor.descriptor(2, 3, 5))
    cdc = _in_endpoints(usbcdc.descriptor(2, 3, 5))
    repl = 2
    assert 1 + repl + (vendor - 1) == 4 <= MAX_IN_EPS
    assert 1 + repl + (cdc - 1) == 5 <= MAX_IN_EPS
    assert 1 + repl + (cdc - 1) + (vendor - 1) == 6 > MAX_IN_EPS


def test_up_while_configured():
    usb, port = make(False)
    assert not port.up()
    usb.enumerate()
    assert port.up()
    usb.reset()
    assert not port.up()


def test_a_burst_ending_on_a_full_packet_is_closed_by_a_zero_length_packet():
    usb, port = make()
    assert port.write(bytes(128), 128) == 128
    settle()
    assert usb.complete_in() == 128
    assert usb.complete_in() == 0  # the zero-length packet: the host's 512-byte read completes
    assert usb.complete_in() is None
    assert port.write(bytes(100), 100) == 100  # 64 + 36: the short tail ends the read by itself
    settle()
    assert usb.complete_in() == 64 and usb.complete_in() == 36 and usb.complete_in() is None


def test_bytes_flow_both_ways_and_class_requests_are_stalled():
    usb, port = make()
    usb.pending.pop(EP_OUT)[:5] = b"hello"
    usb.xfer(EP_OUT, 0, 5)
    buf = bytearray(16)
    assert port.readinto(buf) == 5 and buf[:5] == b"hello"
    settle()
    assert EP_OUT in usb.pending  # re-armed
    assert usb.control(1, bytearray((0x41, 0x01, 0, 0, 2, 0, 0, 0))) is False  # vendor request: stall
    assert usb.control(1, bytearray((0x21, 0x22, 3, 0, 2, 0, 0, 0))) is False  # no CDC here
