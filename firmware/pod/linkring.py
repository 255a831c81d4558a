"""The TX and RX rings every pod link transport keeps (pod/usbbulk.py's USB functions,
pod/ble.py): the byte side of hal.open_link's Port contract, and what the transport's
callbacks take from and put into them.

write(buf, n) takes what fits of buf[0:n] into the TX ring and never waits;
tx_free() says how much would fit; readinto(buf) copies what has arrived.
A transport learns of both through _tx_added() and _rx_taken(). Its callbacks
read TX with tx_pending()/tx_peek() and let go with tx_done() once the bytes
are out, and put what arrived with rx_room()/rx_put(). Indices run modulo twice
the size, so a full ring and an empty one differ. Nothing allocates after
__init__: one viper call copies, wrapping at the ring's end.

Transports behind pod/ports.Ports share one pair of buffers (Rings(like=)):
one carries the link at a time, and the others stand by (stand_by()): a
standby one takes no bytes in (rx_put drops them: a standby host's commands
are not applied) and has nothing to send (tx_pending 0), whatever its
callbacks still do. Ports switches in the main context; the new active one
starts with both rings empty, the link starting over on it.
"""
import micropython
from micropython import const

_TX_SIZE = const(4096)  # backlog: a burst of telemetry plus the 2 KB link.py keeps for answers
_RX_SIZE = const(1024)  # host commands that arrive during a 10-20 ms render or GC stall
_TX_WRAP = const(8191)
_RX_WRAP = const(2047)


class Rings:
    def __init__(self, like=None):
        """like: the Rings whose buffers these share, standing by until stand_by(False)."""
        if like is None:
            self._tx = bytearray(_TX_SIZE)
            self._rx = bytearray(_RX_SIZE)
        else:
            self._tx = like._tx
            self._rx = like._rx
        self._standby = like is not None
        self._th = self._tt = 0  # TX head (written by write) and tail (by the transport)
        self._rh = self._rt = 0  # RX head (the transport) and tail (readinto)

    def stand_by(self, on):
        """Stand by (on) or carry the link (not on): either way both rings start empty."""
        self._standby = True  # first: from here the transport's callbacks neither put nor send
        self._th = self._tt = self._rh = self._rt = 0
        if not on:
            self._standby = False
            self._rx_taken()  # room for the host's bytes (a USB function arms its OUT transfer)

    # -- main context: the Port's byte side -----------------------------------
    def tx_free(self):
        return _TX_SIZE - ((self._th - self._tt) & _TX_WRAP)

    def write(self, buf, n):
        th = self._th
        free = _TX_SIZE - ((th - self._tt) & _TX_WRAP)
        if n > free:
            n = free
        if n:
            _ring_copy(self._tx, _TX_SIZE, th & (_TX_SIZE - 1), buf, n, 1)
            self._th = (th + n) & _TX_WRAP  # publish only once the bytes are there
            self._tx_added()
        return n

    def readinto(self, buf):
        rt = self._rt
        n = (self._rh - rt) & _RX_WRAP
        if not n:
            return 0
        if n > len(buf):
            n = len(buf)
        _ring_copy(self._rx, _RX_SIZE, rt & (_RX_SIZE - 1), buf, n, 0)
        self._rt = (rt + n) & _RX_WRAP
        self._rx_taken()
        return n

    def _tx_added(self):
        pass  # the transport: bytes wait in the TX ring

    def _rx_taken(self):
        pass  # the transport: the RX ring has room again

    # -- the transport's side ---------------------------------------------------
    def tx_pending(self):
        if self._standby:
            return 0
        return (self._th - self._tt) & _TX_WRAP

    def tx_peek(self, dst, n):
        """dst[0:n] = the oldest n bytes of TX (n <= tx_pending()); tx_done(n) lets them go."""
        _ring_copy(self._tx, _TX_SIZE, self._tt & (_TX_SIZE - 1), dst, n, 0)

    def tx_done(self, n):
        self._tt = (self._tt + n) & _TX_WRAP

    def tx_drop(self):
        self._tt = self._th  # what waited is not sent (a new session)

    def rx_room(self):
        return _RX_SIZE - ((self._rh - self._rt) & _RX_WRAP)

    def rx_put(self, src, n):
        """RX += src[0:n] (n <= rx_room()); dropped while standing by."""
        if self._standby:
            return
        rh = self._rh
        _ring_copy(self._rx, _RX_SIZE, rh & (_RX_SIZE - 1), src, n, 1)
        self._rh = (rh + n) & _RX_WRAP


@micropython.viper
def _ring_copy(ring, size: int, pos: int, buf, n: int, put: int):
    # put: ring[pos:] = buf[0:n], else buf[0:n] = ring[pos:]; wrapping at size (n <= size).
    # One call, no allocation
    r = ptr8(ring)
    b = ptr8(buf)
    first = size - pos
    if n < first:
        first = n
    i = 0
    if put:
        while i < first:
            r[pos + i] = b[i]
            i += 1
        while i < n:
            r[i - first] = b[i]
            i += 1
    else:
        while i < first:
            b[i] = r[pos + i]
            i += 1
        while i < n:
            b[i] = r[i - first]
            i += 1
