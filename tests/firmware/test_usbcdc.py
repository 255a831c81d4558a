# The pod link's USB CDC function (pod/usbcdc.py) and link.py's backlog, under
# MicroPython, against a fake machine.USBDevice: the test plays TinyUSB and the
# host, calling the callbacks as mp_usbd_runtime.c does.
import asyncio
import gc

import micropython

from pod import framing, link, usbcdc, wire
import peer_wire  # the host's side of the codec (generated)
from pod.mem import copy

HDR = wire.HEADER_SIZE
EP_IN = 0x84
EP_OUT = 0x04


class _Builtin:  # the S3 image's BUILTIN_CDC: REPL on interfaces 0-1, endpoints 1-2
    itf_max = 2
    ep_max = 3
    str_max = 5
    desc_dev = bytes(18)
    desc_cfg = bytes((9, 2, 75, 0, 2, 1, 0, 0x80, 125)) + bytes(66)


class FakeUSB:
    BUILTIN_CDC = _Builtin()

    def __init__(self):
        self.builtin_driver = None
        self.is_active = False
        self.pending = {}  # ep -> submitted buffer
        self.got = bytearray(8192)  # what the host read
        self.got_n = 0

    def config(self, desc_dev, desc_cfg, desc_strs, open_itf_cb, reset_cb, control_xfer_cb, xfer_cb):
        self.cfg, self.strs = desc_cfg, desc_strs
        self.open_itf, self.reset, self.control, self.xfer = open_itf_cb, reset_cb, control_xfer_cb, xfer_cb

    def active(self, value=None):
        was = self.is_active
        if value is not None:
            self.is_active = value
        return was

    def submit_xfer(self, ep, buf):
        assert self.is_active and ep not in self.pending, "EBUSY"
        self.pending[ep] = buf
        return True

    def enumerate(self):
        self.reset()
        self.open_itf(memoryview(self.cfg)[75 + 8:])

    def host_send(self, data, n):
        """The host writes data[0:n]; False if the pod stopped taking packets (NAK)."""
        off = 0
        while off < n:
            buf = self.pending.pop(EP_OUT, None)
            if buf is None:
                return False
            k = min(64, n - off)
            copy(buf, 0, data, off, k)
            off += k
            self.xfer(EP_OUT, 0, k)
        return True

    def host_read(self):
        """The host reads every IN transfer the pod has queued; bytes read."""
        total = 0
        while True:
            buf = self.pending.pop(EP_IN, None)
            if buf is None:
                break
            n = len(buf)
            if self.got_n + n <= len(self.got):
                copy(self.got, self.got_n, buf, 0, n)
                self.got_n += n
            total += n
            self.xfer(EP_IN, 0, n)
            settle()  # the kicks write() scheduled
        return total


def settle():
    for _ in range(3):  # scheduled callbacks run at the VM's next checks
        pass


def make(open_=True):
    usb = FakeUSB()
    port = usbcdc.open(usb)
    if open_:
        usb.enumerate()
    return usb, port


def frames_in(usb):
    out = []
    framing.Decoder(lambda t, s, f, e: out.append((t, s, bytes(f[HDR:e])))).feed(usb.got, usb.got_n)
    usb.got_n = 0
    return out


def test_descriptors_append_a_cdc_acm_function_after_the_repl():
    usb, port = make(False)
    cfg = usb.cfg
    assert usb.builtin_driver is usb.BUILTIN_CDC and usb.is_active
    assert len(cfg) == 75 + 66 and cfg[2] | cfg[3] << 8 == len(cfg) and cfg[4] == 4
    f = cfg[75:]
    assert f[0:4] == bytes((8, 0x0B, 2, 2))  # IAD: interfaces 2 and 3
    assert bytes(f[8:11]) == bytes((9, 4, 2)) and bytes(f[36:39]) == bytes((7, 5, 0x83))
    eps = [(f[i + 2], f[i + 3], f[i + 4]) for i in range(len(f) - 6) if f[i] == 7 and f[i + 1] == 5]
    assert eps == [(0x83, 3, 8), (EP_OUT, 2, 64), (EP_IN, 2, 64)]
    assert usb.strs == {5: "hypnolum link"}


def test_class_requests_are_answered_and_others_stalled():
    usb, port = make()
    req = bytearray((0x21, 0x20, 0, 0, 2, 0, 7, 0))  # SET_LINE_CODING to interface 2
    buf = usb.control(1, req)
    assert len(buf) == 7
    buf[:] = b"\x00\x10\x0e\x00\x00\x00\x08"  # 921600 8N1 in the data stage
    assert usb.control(2, req) and usb.control(3, req)
    assert bytes(usb.control(1, bytearray((0xA1, 0x21, 0, 0, 2, 0, 7, 0)))) == b"\x00\x10\x0e\x00\x00\x00\x08"
    assert usb.control(1, bytearray((0x21, 0x22, 3, 0, 2, 0, 0, 0))) is True and port.dtr and port.up()
    assert usb.control(1, bytearray((0x21, 0x22, 0, 0, 2, 0, 0, 0))) is True and not port.dtr and not port.up()
    assert usb.control(1, bytearray((0x21, 0x22, 3, 0, 2, 0, 0, 0))) is True and port.up()
    usb.reset()  # a bus reset: unconfigured, the tty closed
    assert not port.dtr and not port.up()
    assert usb.control(1, bytearray((0x21, 0x22, 3, 0, 0, 0, 0, 0))) is False  # the REPL's interface
    assert usb.control(1, bytearray((0x01, 0x0B, 0, 0, 2, 0, 0, 0))) is False  # standard SET_INTERFACE


def test_bytes_wait_for_configuration_then_flow_both_ways():
    usb, port = make(False)
    assert port.write(b"hello\x03\x00", 7) == 7  # 0x03 is data, not Ctrl-C
    settle()
    assert not usb.pending  # no endpoint before SET_CONFIGURATION
    usb.enumerate()
    assert usb.host_read() == 7 and bytes(usb.got[:7]) == b"hello\x03\x00"
    data = bytes(range(1, 200))
    assert usb.host_send(data, len(data))
    buf = bytearray(256)
    assert port.readinto(buf) == 199 and buf[:199] == data and port.readinto(buf) == 0
    big = bytes(range(256)) * 5  # 1280 B: IN transfers of whole packets, at most 512 B, then the tail
    assert port.write(big, len(big)) == 1280
    settle()
    assert len(usb.pending[EP_IN]) == 512
    usb.got_n = 0
    assert usb.host_read() == 1280 and bytes(usb.got[:1280]) == big


def test_rx_ring_full_naks_the_host_until_read():
    usb, port = make()
    data = bytes(64)
    sent = 0
    while usb.host_send(data, 64):
        sent += 64
    assert sent == 1024  # the ring's size: then the OUT endpoint is not re-armed
    buf = bytearray(100)
    assert port.readinto(buf) == 100
    settle()
    assert EP_OUT in usb.pending  # room for a packet again


def test_tx_ring_takes_what_fits_and_reports_it():
    usb, port = make(False)
    data = bytes(1000)
    assert [port.write(data, 1000) for _ in range(5)] == [1000, 1000, 1000, 1000, 96]
    assert port.tx_free() == 0 and port.write(data, 10) == 0


def _link(usb, port):
    lk = link.Link(port, ("pod-usb", "0", 1, 12, 8, 250), lambda *a: 0)
    lk.register(wire.T_GROUP_VALUE, lambda *a: None, command=False)
    return lk


async def test_link_reader_allocates_nothing_per_frame():
    usb, port = make()
    lk = _link(usb, port)
    task = asyncio.create_task(lk.rx_task())
    enc = framing.Encoder()
    enc.body[HDR:HDR + 2] = b"\x03\x00"
    one = bytes(enc.encode(0x7E, 9, HDR + 2))  # an unknown type with a 0x03 in it: read, NACKed
    burst = bytearray(one * 12)

    async def run(frames, bursts):
        n = len(one) * frames
        gc.collect()
        a = gc.mem_alloc()
        for _ in range(bursts):
            usb.host_send(burst, n)  # arrives while the reader waits: one wake per burst
            await asyncio.sleep_ms(0)
            await asyncio.sleep_ms(0)
            usb.host_read()
        return gc.mem_alloc() - a

    await run(12, 5)  # warm up: the encoder's views, dict slots
    small = await run(2, 20)
    large = await run(12, 20)
    task.cancel()
    assert lk.unknown_types == 5 * 12 + 20 * 2 + 20 * 12  # every frame read and answered
    assert [t for t, s, f in frames_in(usb)][-3:] == [wire.T_NACK] * 3
    per_frame = (large - small) / (20 * 10)
    assert per_frame == 0, "reader allocates %r B per frame (%d vs %d B)" % (per_frame, large, small)


async def test_backlog_drops_telemetry_answers_commands_and_resumes():
    usb, port = make()
    lk = _link(usb, port)
    task = asyncio.create_task(lk.rx_task())
    body = lk.body
    end = wire.pack_log(body, HDR, wire.LOG_LEVEL_INFO, "x" * 180)  # a ~200 B telemetry frame
    sent = 1 if lk.send_telemetry(wire.T_LOG, end) else 0  # warm up the encoder's view
    gc.collect()
    a = gc.mem_alloc()
    for _ in range(199):  # the host has stopped reading: nothing completes
        if lk.send_telemetry(wire.T_LOG, end):
            sent += 1
        settle()
    grown = gc.mem_alloc() - a
    assert lk.tx_dropped == 200 - sent and sent < 20  # 512 B in flight + ~2 KB of backlog
    assert lk.backlogged() and port.tx_free() >= 1030  # an answer still fits
    assert grown == 0  # bounded: nothing queued outside the ring
    ping = framing.Encoder()
    e = peer_wire.pack_ping(ping.body, HDR, 77, 123)
    f = bytes(ping.encode(wire.T_PING, 5, e))
    usb.host_send(f, len(f))
    await asyncio.sleep_ms(0)
    await asyncio.sleep_ms(0)
    assert lk.tx_lost == 0
    usb.host_read()  # the host reads again: backlog, then the PONG
    got = frames_in(usb)
    assert [t for t, s, x in got].count(wire.T_LOG) == sent and got[-1][0] == wire.T_PONG
    assert not lk.backlogged() and lk.send_telemetry(wire.T_LOG, end)  # resumed
    task.cancel()
