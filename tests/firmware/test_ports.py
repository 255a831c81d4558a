# The one pod link over several transports (pod/ports.py), under MicroPython: which transport
# carries the link, the switch (HELLO on the new one, its standby bytes dropped), and wait().
# Each transport here is a byte pipe with the Port contract (a host attached or not) on the
# real rings, the standby ones sharing the first one's.
import asyncio
import gc

from pod import framing, link, ports, wire
from pod.flagwait import FlagWait
from pod.linkring import Rings
from pod.mem import copy


class Pipe(Rings, FlagWait):
    """A transport's pod end on the rings every transport keeps (pod/linkring.py): what the
    pod wrote reaches out[0:out_n] at once, send() is the host sending, host whether one is
    attached. Pipe(like=other) shares other's rings, standing by, as the BLE port shares the
    USB function's."""

    def __init__(self, like=None):
        Rings.__init__(self, like)
        self.host = False
        self.out = bytearray(8192)
        self.out_n = 0
        self._chunk = bytearray(4096)
        self._init_wait(asyncio.ThreadSafeFlag())

    def up(self):
        return self.host

    def _tx_added(self):  # the transport sends at once
        n = self.tx_pending()
        self.tx_peek(self._chunk, n)
        copy(self.out, self.out_n, self._chunk, 0, n)
        self.out_n += n
        self.tx_done(n)

    def send(self, data):  # the host sends: what the RX ring has room for
        n = min(len(data), self.rx_room())
        self.rx_put(data, n)
        self._flag.set()


def _types(pipe):
    """The message types of the frames the pod wrote to pipe, in order."""
    types = []
    dec = framing.Decoder(lambda t, seq, frame, end: types.append(t))
    dec.feed(pipe.out, pipe.out_n)
    return types


def _hello_link(p):
    lk = link.Link(p, ("pod-01", "0.1.0", 1, 16, 8, 250), lambda *a: 0)
    p.on_switch = lk.start_over
    return lk


def test_the_first_transport_up_keeps_the_link_until_it_goes_down():
    usb = Pipe()
    ble = Pipe(like=usb)
    p = ports.Ports([usb, ble])
    lk = _hello_link(p)
    buf = bytearray(16)
    assert not p.up()
    lk.send_hello()  # nobody is attached: the first transport's ring takes it, as a lone CDC port's would
    assert usb.out_n > 0 and ble.out_n == 0 and p.switches == 0
    ble.host = True  # BLE comes up first
    lk.send_log(wire.LOG_LEVEL_INFO, "x")  # the switch is found inside this send: it goes whole
    assert p.active is ble and p.switches == 1 and _types(ble) == [wire.T_LOG]
    assert p.readinto(buf) == 0  # the link's next read, between frames: it starts over there
    assert _types(ble) == [wire.T_LOG, wire.T_HELLO], _types(ble)
    usb.host = True  # USB comes up too: BLE keeps the link
    before = usb.out_n
    lk.send_log(wire.LOG_LEVEL_INFO, "y")
    assert p.active is ble and usb.out_n == before
    ble.host = False  # BLE goes: USB takes over
    usb.send(b"\x00stale standby bytes\x00")
    n_ble = ble.out_n
    lk.send_log(wire.LOG_LEVEL_INFO, "z")
    assert p.active is usb and p.switches == 2 and ble.out_n == n_ble
    assert p.readinto(buf) == 0  # what USB's host sent while it stood by was dropped, not applied
    usb.host = ble.host = False  # nobody: the last transport keeps taking bytes
    lk.send_log(wire.LOG_LEVEL_INFO, "w")
    assert p.active is usb and p.switches == 2


async def test_wait_wakes_for_bytes_on_the_active_transport_and_for_a_switch():
    usb = Pipe()
    ble = Pipe(like=usb)
    usb.host = True
    p = ports.Ports([usb, ble])
    buf = bytearray(16)
    got = []

    async def reader():
        while True:
            n = p.readinto(buf)
            if n:
                got.append(bytes(buf[:n]))
            else:
                await p.wait()

    task = asyncio.create_task(reader())
    await asyncio.sleep_ms(10)
    ble.host = True
    ble.send(b"standby")  # BLE is up but stands by: not read
    await asyncio.sleep_ms(20)
    assert got == []
    usb.send(b"abc")
    await asyncio.sleep_ms(20)
    assert got == [b"abc"]
    usb.host = False
    p.up()  # the choice is made at the next call: BLE takes over, its standby bytes dropped
    ble.send(b"def")
    await asyncio.sleep_ms(20)
    assert got == [b"abc", b"def"], got
    task.cancel()


def test_forwarding_allocates_nothing():
    usb = Pipe()
    ble = Pipe(like=usb)
    usb.host = True
    p = ports.Ports([usb, ble])
    buf = bytearray(64)
    p.write(buf, 10)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(50):
        p.write(buf, 10)
        p.tx_free()
        p.readinto(buf)
        p.up()
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def test_a_standby_transport_shares_the_rings_without_touching_the_link_bytes():
    usb = Pipe()
    usb.host = True
    gc.collect()
    before = gc.mem_alloc()
    solo = Pipe()
    alone = gc.mem_alloc() - before
    gc.collect()
    before = gc.mem_alloc()
    ble = Pipe(like=usb)
    shared = gc.mem_alloc() - before
    assert alone - shared >= 4096 + 1024, (alone, shared)  # no rings of its own
    assert solo._tx is not usb._tx and ble._tx is usb._tx
    p = ports.Ports([usb, ble])
    buf = bytearray(64)
    usb.send(b"host command")  # waits in the shared RX ring
    ble.host = True
    ble.send(b"neighbour bytes that must not land in the link's ring")
    p.write(b"telemetry", 9)
    assert ble.tx_pending() == 0 and ble.out_n == 0  # the standby transport has nothing to send
    n = p.readinto(buf)
    assert bytes(buf[:n]) == b"host command"
    assert usb.out[:usb.out_n] == b"telemetry"
    ble.stand_by(True)  # a late completion on a standby transport changes nothing
    ble.tx_done(7)
    assert ble.tx_pending() == 0
    assert p.readinto(buf) == 0
