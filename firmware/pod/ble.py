"""The pod link over BLE: a GATT peripheral on MicroPython's low-level bluetooth module.

One primary service, the Nordic UART layout hostd's BLE transport speaks
(host/transport/ble.py): the host writes frames to RX (write without
response), the pod notifies its frames on TX. The link's bytes are a stream
cut into ATT packets; the frames' COBS delimiters put them together again.

The Port (hal.open_link's contract, plus up()) never blocks the render loop:
write() copies into a TX ring and returns; a task of its own sends
notifications of up to ATT_MTU - 3 bytes (the MTU the central exchanged,
_IRQ_MTU_EXCHANGED) from what is in the ring, until the stack has no buffer
left: gatts_notify raises OSError(ENOMEM) when NimBLE's mbuf pool is spent
(extmod/nimble/modbluetooth_nimble.c:1058-1072 at v1.28.0), and it tries again
_RETRY_MS later. A slow link fills the ring and link.py drops telemetry first
(tx_free), as on USB.

Security. The stack pairs with LE Secure Connections and bonds (config bond,
le_secure; io NO_INPUT_OUTPUT: the pod has no display or keys, so pairing is
Just Works and the pairing window is what keeps strangers out). The link's
bytes flow only once the central is encrypted and bonded
(_IRQ_ENCRYPTION_UPDATE); a central that is not within _SECURE_WITHIN_MS of
connecting is disconnected, and RX is write-encrypted, so the stack refuses
an unencrypted write itself. A new bond is stored only while the pairing
window is open: at boot when the flag file ble_pair.flag is on the pod's
flash (written by `hypnolum flash --ble-pair` over USB, i.e. with the pod in
hand), for ble_pair_s seconds; it is consumed at boot. Outside the window the
stack's request to store keys (_IRQ_SET_SECRET) is refused, whoever pairs, and
the central disconnected. Bonds are kept in ble_bonds.bin (pod/bonds.py).

Events. On the ESP32 the irq runs synchronously in NimBLE's task, with the
GIL and the scheduler locked (ports/esp32/mpconfigport.h:101-102,
extmod/modbluetooth.c:1262-1290): here it only moves bytes and sets flags.
The event's buffers are valid during the call only (memoryviews into the
stack's: modbluetooth.c:1156-1199): they are copied. gatts_read allocates the
value it returns (modbluetooth.c:733); the host writes little (commands,
5 pings a second), so that is the one allocation per received write.
"""
import asyncio

import hal
from micropython import const

from pod.bonds import Bonds
from pod.flagwait import Flag, FlagWait
from pod.linkring import Rings

_IRQ_CENTRAL_CONNECT = const(1)  # extmod/modbluetooth.h:133-163
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_FLAG_NOTIFY = const(0x0010)  # extmod/modbluetooth.h:94-113
_IO_NO_INPUT_OUTPUT = const(3)  # extmod/modbluetooth.h:174
_SEC_CCCD = const(3)  # a bonded peer's subscriptions (NimBLE's BLE_STORE_OBJ_TYPE_CCCD), not keys

_MTU = const(247)  # asked for; one notification then fills one LE data packet (251 B with DLE)
_CHUNK_MAX = const(244)  # _MTU - 3
_RX_ATTR = const(512)  # the RX attribute's buffer: writes append until the irq reads them
_SMALL = const(64)  # notification lengths up to this have a view each
_RETRY_MS = const(10)  # the stack's buffers are spent: try again after this (one RTOS tick)
_SECURE_WITHIN_MS = const(5000)  # a central not encrypted and bonded by then is disconnected
_ADV_INTERVAL_US = const(100000)
_NAME_MAX = const(26)  # adv data: 31 B - flags (3) - the name's header (2)

_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
_SERVICE_LE = b"\x9e\xca\xdc\x24\x0e\xe5\xa9\xe0\x93\xf3\xa3\xb5\x01\x00\x40\x6e"  # as advertised
_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
_RX_FLAGS = const(0x100C)  # _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE | _FLAG_WRITE_ENCRYPTED

PAIR_FLAG = "ble_pair.flag"


def adv_payloads(pod_id):
    """(advertising data, scan response): flags and the pod id as the name (shortened
    beyond _NAME_MAX characters), and the service's 128-bit UUID."""
    name = pod_id.encode()
    kind = 0x09  # complete local name
    if len(name) > _NAME_MAX:
        name = name[:_NAME_MAX]
        kind = 0x08  # shortened local name
    adv = bytes((2, 0x01, 0x06, len(name) + 1, kind)) + name
    return adv, bytes((len(_SERVICE_LE) + 1, 0x07)) + _SERVICE_LE


class Port(Rings, FlagWait):
    def __init__(self, bt, pod_id, pair_s, like=None):
        """bt: the bluetooth module (hal's); pod_id: advertised; pair_s: the pairing window;
        like: the Port whose rings this one shares, standing by (pod/ports.py)."""
        self._ble = ble = bt.BLE()
        ble.active(True)
        ble.config(gap_name=pod_id[:_NAME_MAX], mtu=_MTU, bond=True, le_secure=True, mitm=False,
                   io=_IO_NO_INPUT_OUTPUT)
        uuid = bt.UUID
        service = (uuid(_SERVICE), ((uuid(_TX), _FLAG_NOTIFY), (uuid(_RX), _RX_FLAGS)))
        ((self._tx_h, self._rx_h),) = ble.gatts_register_services((service,))
        ble.gatts_set_buffer(self._rx_h, _RX_ATTR, True)
        self._notify = ble.gatts_notify  # bound once: fetching it per send would allocate
        self._adv, self._resp = adv_payloads(pod_id)
        self._bonds = Bonds()
        self.problems = [self._bonds.problem] if self._bonds.problem else []  # said over the link at boot
        self._pair_until = 0
        self.pairing = False
        if hal.remove(PAIR_FLAG):  # consumed: the window opens once per flag
            self._pair_until = hal.ticks_add(hal.ticks_ms(), pair_s * 1000)
            self.pairing = True
        Rings.__init__(self, like)  # the same rings as the USB functions' (pod/linkring.py)
        self._note = bytearray(_CHUNK_MAX)
        # gatts_notify sends a whole buffer: a view of _note per length it sends, made on first
        # use (a slice would allocate one per notification). Lengths 1.._SMALL, then multiples
        # of 16 (a longer tail goes as its multiple of 16 and the rest): at most 80 views.
        self._small = [None] * (_SMALL + 1)
        self._big = [None] * (_CHUNK_MAX // 16 + 2)
        self._init_wait(asyncio.ThreadSafeFlag())  # set when bytes arrive: wait() without a coroutine
        self._tx_flag = Flag()
        self._conn = -1
        self._since = 0  # ticks_ms of the connection
        self._trusted = False
        self._refused = False  # this connection asked to store a bond outside the window
        self._chunk = 20  # ATT_MTU 23 - 3 until an exchange
        self.refused = 0  # centrals disconnected: not encrypted and bonded, or a bond refused
        self.bonded = 0  # new bonds stored
        self.rx_dropped = 0  # written bytes that did not fit the RX ring
        self.notify_full = 0  # notifications the stack had no buffer for (tried again)
        ble.irq(self._irq)
        self._advertise()

    # -- the Port ------------------------------------------------------------
    def up(self):
        return self._trusted

    def _tx_added(self):
        self._tx_flag.set()  # run() sends it

    # -- notifications ---------------------------------------------------------
    async def run(self):
        """Send what the TX ring holds as notifications; disconnect a central that does
        not secure the link in time."""
        flag = self._tx_flag
        sleep = asyncio.sleep_ms
        while True:
            if self._conn >= 0 and not self._trusted:
                if self._refused or hal.ticks_diff(hal.ticks_ms(), self._since) > _SECURE_WITHIN_MS:
                    self._refuse()
                await sleep(100)
            elif not self._trusted or not self.tx_pending():
                await flag.wait()
            elif not self._send():
                await sleep(_RETRY_MS)

    def _send(self):
        # notifications until the ring is empty (True) or the stack is out of buffers (False)
        conn = self._conn
        notify = self._notify
        note = self._note
        while True:
            n = self.tx_pending()
            if not n:
                return True
            if n >= self._chunk:
                n = self._chunk
                v = self._big[_CHUNK_MAX // 16 + 1]
                if v is None or len(v) != n:  # the MTU changed
                    v = self._big[_CHUNK_MAX // 16 + 1] = memoryview(note)[:n]
            elif n > _SMALL:
                n &= ~15
                v = self._big[n >> 4]
                if v is None:
                    v = self._big[n >> 4] = memoryview(note)[:n]
            else:
                v = self._small[n]
                if v is None:
                    v = self._small[n] = memoryview(note)[:n]
            self.tx_peek(note, n)
            try:
                notify(conn, self._tx_h, v)
            except OSError:  # ENOMEM: NimBLE's buffers are all queued; the bytes stay in the ring
                self.notify_full += 1
                return False
            self.tx_done(n)

    # -- the stack's events (NimBLE's task on the board) -------------------------
    def _irq(self, event, data):
        if event == _IRQ_GATTS_WRITE:
            conn, handle = data
            value = self._ble.gatts_read(handle)  # read (and clear) in any case
            if conn == self._conn and self._trusted and handle == self._rx_h:
                self._put_rx(value)
        elif event == _IRQ_CENTRAL_CONNECT:
            conn = data[0]
            if self._conn >= 0:  # one central at a time
                self._ble.gap_disconnect(conn)
                return
            self._conn = conn
            self._since = hal.ticks_ms()
            self._trusted = False
            self._refused = False
            self._chunk = 20
            self._tx_flag.set()  # run() watches the deadline
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self._conn:
                self._conn = -1
                self._trusted = False
                self._advertise()
        elif event == _IRQ_MTU_EXCHANGED:
            conn, mtu = data
            if conn == self._conn:
                self._chunk = min(mtu - 3, _CHUNK_MAX)
        elif event == _IRQ_ENCRYPTION_UPDATE:
            conn, encrypted, _authenticated, bonded, _key_size = data
            if conn != self._conn:
                return
            if encrypted and bonded and not self._refused:
                if not self._trusted:
                    self.tx_drop()  # a new session: what waited for the last one is not sent
                    self._trusted = True
                    self._tx_flag.set()
            else:
                self._refuse()
        elif event == _IRQ_GET_SECRET:
            sec_type, index, key = data
            return self._bonds.get(sec_type, index, key)
        elif event == _IRQ_SET_SECRET:
            sec_type, key, value = data
            # keys are stored at pairing only (NimBLE's ble_sm_persist_keys), never when a bond
            # is used: outside the window any pairing is refused, also one naming the address
            # of a bonded host (an address can be spoofed, and Just Works proves nothing)
            if value is not None and sec_type != _SEC_CCCD and not self._window():
                self._refused = True  # run() disconnects
                self._trusted = False
                self._tx_flag.set()
                return False
            ok = self._bonds.set(sec_type, key, value)
            if ok and value is not None and sec_type != _SEC_CCCD:
                self.bonded += 1
            return ok
        return None

    def _put_rx(self, value):
        n = len(value)
        free = self.rx_room()
        if n > free:
            self.rx_dropped += n - free
            n = free
        if n:
            self.rx_put(value, n)
            self._flag.set()

    def _window(self):
        if self.pairing and hal.ticks_diff(self._pair_until, hal.ticks_ms()) <= 0:
            self.pairing = False
        return self.pairing

    def _refuse(self):
        conn = self._conn
        if conn < 0:
            return
        self.refused += 1
        self._trusted = False
        try:
            self._ble.gap_disconnect(conn)
        except OSError:
            pass

    def _advertise(self):
        self._ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self._adv, resp_data=self._resp, connectable=True)


def open(bt, cfg, like=None):
    """The BLE port on bt (the bluetooth module) for pod config cfg (pod_id, ble_pair_s),
    sharing like's rings if given; its run() must be started."""
    return Port(bt, cfg.pod_id, cfg.ble_pair_s, like)
