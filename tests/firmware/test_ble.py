# The BLE port (pod/ble.py) under MicroPython, against a stand-in for the bluetooth module's
# BLE object: the test plays NimBLE, raising the irq events with the data tuples of
# extmod/modbluetooth.c (v1.28.0) and taking the notifications, ENOMEM when its buffers are
# spent. Who may use the link, the pairing window, the bond file, notifications cut at the
# MTU without allocating.
import gc

import hal
from pod import ble, bonds

CONNECT, DISCONNECT, WRITE, MTU, ENCRYPTION, GET_SECRET, SET_SECRET = 1, 2, 3, 21, 28, 29, 30
TX, RX = 10, 12
ENOMEM = 12


class FakeBLE:
    def __init__(self):
        self.notes = []
        self.room = 1000  # notifications the stack can still take
        self.disconnected = []
        self.adv = None
        self.values = {}
        self.cfg = {}
        self.handler = None
        self.keep = True  # keep a copy of each notification (False: count its bytes only)
        self.sent = 0

    def active(self, value=None):
        return True

    def config(self, **kw):
        self.cfg.update(kw)

    def gatts_register_services(self, services):
        ((_uuid, chars),) = services
        assert chars[0][1] & 0x10 and chars[1][1] & 0x1000  # TX notifies; RX takes encrypted writes only
        return ((TX, RX),)

    def gatts_set_buffer(self, handle, n, append=False):
        pass

    def irq(self, handler):
        self.handler = handler

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        self.adv = (adv_data, resp_data)

    def gap_disconnect(self, conn):
        self.disconnected.append(conn)
        return True

    def gatts_read(self, handle):
        return self.values.pop(handle, b"")

    def gatts_notify(self, conn, handle, data):
        if not self.room:
            raise OSError(ENOMEM)
        self.room -= 1
        self.sent += len(data)
        if self.keep:
            self.notes.append(bytes(data))

    def event(self, ev, data):
        return self.handler(ev, data)


class BT:
    the = None

    @staticmethod
    def BLE():
        return BT.the

    @staticmethod
    def UUID(text):
        return text


def _port(pairing):
    hal.remove(bonds.FILE)
    if pairing:
        hal.write_file(ble.PAIR_FLAG, b"1")
    BT.the = FakeBLE()
    return BT.the, ble.Port(BT, "pod-01", 120)


def _host_writes(fake, conn, data):
    fake.values[RX] = data
    fake.event(WRITE, (conn, RX))


def test_a_central_that_does_not_secure_the_link_gets_nothing_and_a_new_bond_outside_the_window_is_refused():
    fake, port = _port(pairing=False)
    assert b"\x07\x09pod-01" in fake.adv[0] and fake.cfg["bond"] and fake.cfg["le_secure"]
    fake.event(CONNECT, (5, 0, memoryview(b"\x01\x02\x03\x04\x05\x06")))
    _host_writes(fake, 5, b"\x00hello\x00")
    assert port.readinto(bytearray(16)) == 0 and not port.up()
    fake.event(ENCRYPTION, (5, 1, 0, 0, 16))  # encrypted, not bonded
    assert fake.disconnected == [5] and not port.up()
    fake.event(DISCONNECT, (5, 0, memoryview(b"\x01\x02\x03\x04\x05\x06")))
    # a stranger pairs: the stack asks to store its keys; outside the window the pod says no
    fake.event(CONNECT, (6, 0, memoryview(b"\x0a\x02\x03\x04\x05\x06")))
    assert fake.event(SET_SECRET, (2, memoryview(b"peer-6"), memoryview(b"keys"))) is False
    fake.event(ENCRYPTION, (6, 1, 0, 1, 16))
    assert fake.disconnected == [5, 6] and not port.up() and port.refused == 2
    assert hal.read_file(bonds.FILE) is None  # nothing stored


def test_the_pairing_window_takes_a_bond_which_is_kept_in_the_file():
    fake, port = _port(pairing=True)
    assert port.pairing and hal.read_file(ble.PAIR_FLAG) is None  # the flag is consumed
    fake.event(CONNECT, (7, 0, memoryview(b"\x01\x02\x03\x04\x05\x07")))
    assert fake.event(SET_SECRET, (2, memoryview(b"peer-7"), memoryview(b"the keys"))) is True
    fake.event(ENCRYPTION, (7, 1, 0, 1, 16))
    assert port.up() and fake.disconnected == []
    _host_writes(fake, 7, b"\x00abc\x00")
    buf = bytearray(16)
    assert port.readinto(buf) == 5 and bytes(buf[:5]) == b"\x00abc\x00"
    # the stack reads bonds back by key, or by index with key None
    assert fake.event(GET_SECRET, (2, 0, memoryview(b"peer-7"))) == b"the keys"
    assert fake.event(GET_SECRET, (2, 0, None)) == b"the keys"
    assert fake.event(GET_SECRET, (2, 1, None)) is None
    again = bonds.Bonds()  # after a reboot: from the file
    assert again.get(2, 0, b"peer-7") == b"the keys" and len(again) == 1
    # a new boot, window closed: the bonded host encrypts with its bond and gets the link
    fake = BT.the = FakeBLE()
    port2 = ble.Port(BT, "pod-01", 120)
    assert not port2.pairing
    fake.event(CONNECT, (8, 0, memoryview(b"\x01\x02\x03\x04\x05\x07")))
    assert fake.event(GET_SECRET, (2, 0, memoryview(b"peer-7"))) == b"the keys"
    fake.event(ENCRYPTION, (8, 1, 0, 1, 16))
    assert port2.up()
    fake.event(DISCONNECT, (8, 0, memoryview(b"\x01\x02\x03\x04\x05\x07")))
    # one pairing under that host's address (anyone can claim an address): refused, bond kept
    fake.event(CONNECT, (9, 0, memoryview(b"\x01\x02\x03\x04\x05\x07")))
    assert fake.event(SET_SECRET, (2, memoryview(b"peer-7"), memoryview(b"a stranger's"))) is False
    fake.event(ENCRYPTION, (9, 1, 0, 1, 16))
    assert not port2.up() and fake.disconnected == [9]
    assert fake.event(GET_SECRET, (2, 0, memoryview(b"peer-7"))) == b"the keys"
    assert fake.event(SET_SECRET, (3, memoryview(b"peer-7"), memoryview(b"cccd"))) is True  # subscriptions


def _trusted(mtu):
    fake, port = _port(pairing=True)
    fake.event(CONNECT, (1, 0, memoryview(b"\x01\x02\x03\x04\x05\x06")))
    fake.event(SET_SECRET, (2, memoryview(b"peer"), memoryview(b"k")))
    fake.event(ENCRYPTION, (1, 1, 0, 1, 16))
    fake.event(MTU, (1, mtu))
    return fake, port


def test_notifications_fill_the_mtu_keep_order_and_wait_for_the_stack():
    fake, port = _trusted(100)
    data = bytes(range(256)) + bytes(44)
    assert port.write(data, 300) == 300
    assert port._send()
    assert [len(n) for n in fake.notes] == [97, 97, 97, 9]  # MTU - 3 each, then the rest
    assert b"".join(fake.notes) == data
    fake.notes.clear()
    port.write(data, 280)
    assert port._send()
    assert [len(n) for n in fake.notes] == [97, 97, 80, 6]  # a longer tail as its 16s and the rest
    assert b"".join(fake.notes) == data[:280]
    fake.notes.clear()
    fake.room = 2  # the stack's buffers run out: the rest waits in the ring
    port.write(data, 300)
    assert not port._send() and port.notify_full == 1
    assert port.tx_free() == 4096 - (300 - 2 * 97)
    fake.room = 100
    assert port._send()
    assert b"".join(fake.notes) == data


def test_sending_allocates_nothing_once_the_lengths_were_seen():
    fake, port = _trusted(247)
    fake.keep = False
    data = bytearray(600)
    for _ in range(3):
        port.write(data, 600)
        port._send()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(20):
        port.write(data, 600)
        port.tx_free()
        port._send()
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
    assert fake.sent == 23 * 600


def test_a_torn_bond_file_keeps_the_records_before_the_tear_and_says_so():
    fake, port = _port(pairing=True)
    fake.event(SET_SECRET, (2, memoryview(b"peer-a"), memoryview(b"keys a")))
    fake.event(SET_SECRET, (2, memoryview(b"peer-b"), memoryview(b"keys b")))
    data = hal.read_file(bonds.FILE)
    hal.write_file(bonds.FILE, data[:-3])  # a power cut tore the last record
    BT.the = FakeBLE()
    port = ble.Port(BT, "pod-01", 120)
    assert port.problems == ["ble_bonds.bin: record 2 at byte 16 is cut short; the 1 before it are kept"], port.problems
    assert BT.the.event(GET_SECRET, (2, 0, memoryview(b"peer-a"))) == b"keys a"
    assert BT.the.event(GET_SECRET, (2, 0, memoryview(b"peer-b"))) is None
