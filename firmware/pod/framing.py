"""Frames on the pod link: COBS( version | type | seq | payload | crc32 ) 0x00.

Same format as protocol/codec.py on the host. The CRC is CRC-32/IEEE
(binascii.crc32) over header + payload, little-endian. COBS removes every 0x00
from a frame, so a receiver that starts mid-stream or meets garbage is back in
step at the next 0x00.

Both directions work in buffers allocated once: the decoder un-COBSes byte by
byte straight into its frame buffer, the encoder writes into its output buffer.
Byte loops are viper kernels: a loop of bytecode per byte costs the link more
than all the rest of a message. The CRC is a table kernel that reads and writes
the four CRC bytes in place: binascii.crc32 returns a u32, a heap int on the
board 3 times in 4.
"""
import array

import micropython
from micropython import const

# wire layout (values generated from protocol/messages.py by `make codec`)
_MAX_FRAME = const(1024)  # MAX_FRAME
_HDR = const(4)  # HEADER_SIZE
_CRC = const(4)  # CRC_SIZE
_VERSION = const(1)  # PROTOCOL_VERSION
# end of wire layout
# COBS adds one code byte per 254 data bytes, plus one; then the 0x00 delimiter.
MAX_ENCODED = const(_MAX_FRAME + _MAX_FRAME // 254 + 2)

_POLY = 0xEDB88320  # CRC-32/IEEE, reflected; heap ints on a 32-bit port: created once,
_ONES = 0xFFFFFFFF  # read by viper as uint arguments (truncated to the word, never boxed)
_VIEWS = const(8)  # encoded lengths whose memoryview the encoder keeps


@micropython.viper
def _crc_table(tab, poly: uint):
    t = ptr32(tab)
    i = 0
    while i < 256:
        c = uint(i)
        k = 0
        while k < 8:
            if c & 1:
                c = (c >> 1) ^ poly
            else:
                c = c >> 1
            k += 1
        t[i] = c
        i += 1


@micropython.viper
def _crc(buf, n: int, tab, ones: uint, check: int) -> int:
    # CRC-32 of buf[0:n]; check 0: write it little-endian at buf[n:n+4]; check 1: 1 if it equals those bytes
    b = ptr8(buf)
    t = ptr32(tab)
    c = ones
    i = 0
    while i < n:
        c = uint(t[(c ^ uint(b[i])) & 0xFF]) ^ (c >> 8)  # uint: logical shifts on any word size
        i += 1
    c = c ^ ones
    if check:
        return int(uint(b[n]) == (c & 0xFF) and uint(b[n + 1]) == ((c >> 8) & 0xFF)
                   and uint(b[n + 2]) == ((c >> 16) & 0xFF) and uint(b[n + 3]) == ((c >> 24) & 0xFF))
    b[n] = c & 0xFF
    b[n + 1] = (c >> 8) & 0xFF
    b[n + 2] = (c >> 16) & 0xFF
    b[n + 3] = (c >> 24) & 0xFF
    return 1


CRC_TABLE = bytearray(1024)
_crc_table(CRC_TABLE, _POLY)
CRC_ONES = _ONES  # encode_frame's ones: the CRC's initial value and final xor


def crc32_into(buf, n):
    """Write CRC-32/IEEE of buf[0:n] little-endian at buf[n:n+4] (no allocation)."""
    _crc(buf, n, CRC_TABLE, _ONES, 0)


def crc32_ok(buf, n):
    """True if buf[n:n+4] holds the CRC-32/IEEE of buf[0:n], little-endian (no allocation)."""
    return _crc(buf, n, CRC_TABLE, _ONES, 1) == 1


# errors counted by the decoder, by kind (index into Decoder.errors)
ERR_COBS = const(0)  # a frame ended inside a COBS block
ERR_OVERSIZE = const(1)  # no delimiter within a maximum frame
ERR_SHORT = const(2)  # shorter than header + CRC
ERR_CRC = const(3)
ERR_VERSION = const(4)
N_ERRORS = const(5)

# what _unstuff stopped for (the low 2 bits of its result; the position is above them)
_EV_END = const(0)  # the data ran out
_EV_FRAME = const(1)  # a frame ended: its length is in state[_S_LEN]
_EV_COBS = const(2)
_EV_OVERSIZE = const(3)
_S_N = const(0)  # decoder state words (array "i"): bytes decoded so far in this frame,
_S_LEFT = const(1)  # data bytes left in the current COBS block,
_S_CODE = const(2)  # code byte of the current block (0 = frame not started),
_S_SKIP = const(3)  # 1 while discarding an oversize frame until its delimiter,
_S_LEN = const(4)  # the length of the frame that just ended


@micropython.viper
def _unstuff(data, i: int, n: int, frame, state) -> int:
    # un-COBS data[i:n] into frame until a frame ends, an error, or the data ends;
    # returns (position after the last byte consumed) << 2 | _EV_*
    d = ptr8(data)
    f = ptr8(frame)
    st = ptr32(state)
    fn = int(st[_S_N])
    left = int(st[_S_LEFT])
    code = int(st[_S_CODE])
    skip = int(st[_S_SKIP])
    ev = _EV_END
    while i < n:
        b = int(d[i])
        i += 1
        if b == 0:
            if skip:
                skip = 0
            elif left:
                ev = _EV_COBS
            elif code:
                st[_S_LEN] = fn
                ev = _EV_FRAME
            fn = 0
            left = 0
            code = 0
            if ev:
                break
        elif skip:
            pass
        elif left:
            if fn >= _MAX_FRAME:
                skip = 1
                ev = _EV_OVERSIZE
                break
            f[fn] = b
            fn += 1
            left -= 1
        else:
            # a code byte; the block before it ended with an implied 0x00
            # unless it was a full 254-byte block (code 0xFF)
            if code and code != 0xFF:
                if fn >= _MAX_FRAME:
                    skip = 1
                    ev = _EV_OVERSIZE
                    break
                f[fn] = 0
                fn += 1
            code = b
            left = b - 1
    st[_S_N] = fn
    st[_S_LEFT] = left
    st[_S_CODE] = code
    st[_S_SKIP] = skip
    return (i << 2) | ev


class Decoder:
    """Stream decoder. feed(buf, n) calls on_frame(type, seq, frame, end) per good frame.

    frame is the decoder's own buffer (header at 0, payload at HEADER_SIZE..end);
    it is valid only during the call. Bad frames are counted in errors, never raised.
    The byte loop is a viper kernel (_unstuff) that stops at each frame's end.
    """

    def __init__(self, on_frame):
        self.on_frame = on_frame
        self.frame = bytearray(_MAX_FRAME)
        self.frames = 0
        self.errors = bytearray(N_ERRORS)  # small counts per kind; total in .error_count
        self.error_count = 0
        self._state = array.array("i", bytes(4 * 5))  # _S_* words

    def _error(self, kind):
        self.error_count += 1
        if self.errors[kind] < 255:
            self.errors[kind] += 1

    def reset(self):
        st = self._state
        st[_S_N] = st[_S_LEFT] = st[_S_CODE] = st[_S_SKIP] = 0

    def feed(self, data, n):
        """Consume data[0:n]."""
        frame = self.frame
        st = self._state
        i = 0
        while i < n:
            r = _unstuff(data, i, n, frame, st)
            i = r >> 2
            ev = r & 3
            if ev == _EV_FRAME:
                self._finish(st[_S_LEN])
            elif ev == _EV_COBS:
                self._error(ERR_COBS)
            elif ev == _EV_OVERSIZE:
                self._error(ERR_OVERSIZE)

    def _finish(self, n):
        frame = self.frame
        if n < _HDR + _CRC:
            self._error(ERR_SHORT)
            return
        end = n - _CRC
        if _crc(frame, end, CRC_TABLE, _ONES, 1) != 1:
            self._error(ERR_CRC)
            return
        if frame[0] != _VERSION:
            self._error(ERR_VERSION)
            return
        self.frames += 1
        self.on_frame(frame[1], frame[2] | frame[3] << 8, frame, end)


@micropython.viper
def encode_frame(body, end: int, type_: int, seq: int, tab, ones: uint, dst) -> int:
    """Header into body[0:4], CRC-32 (tab: CRC_TABLE, ones: CRC_ONES) after the payload
    at body[4:end], the whole COBS-encoded into dst with its delimiter; returns the
    encoded length. One call per frame; end + 4 <= MAX_FRAME is the caller's to check.

    The COBS is byte-identical to the host's `cobs` package (no trailing code byte
    after a final full 254-byte block), so shared test vectors hold for both ends."""
    b = ptr8(body)
    t = ptr32(tab)
    d = ptr8(dst)
    b[0] = _VERSION
    b[1] = type_
    b[2] = seq & 0xFF
    b[3] = (seq >> 8) & 0xFF
    c = ones
    i = 0
    while i < end:
        c = uint(t[(c ^ uint(b[i])) & 0xFF]) ^ (c >> 8)
        i += 1
    c = c ^ ones
    b[end] = c & 0xFF
    b[end + 1] = (c >> 8) & 0xFF
    b[end + 2] = (c >> 16) & 0xFF
    b[end + 3] = (c >> 24) & 0xFF
    n = end + _CRC
    code_at = 0
    o = 1
    code = 1
    after_full = 0
    i = 0
    while i < n:
        v = int(b[i])
        if v:
            d[o] = v
            o += 1
            code += 1
            after_full = 0
            if code == 0xFF:
                d[code_at] = code
                code_at = o
                o += 1
                code = 1
                after_full = 1
        else:
            d[code_at] = code
            code_at = o
            o += 1
            code = 1
            after_full = 0
        i += 1
    if after_full:
        o -= 1  # the slot reserved for another code byte is not needed
        d[o] = 0
        return o + 1
    d[code_at] = code
    d[o] = 0
    return o + 1


class Encoder:
    """Builds frames in place: pack a payload into body at HEADER_SIZE, then frame() or encode().

    body and out are allocated once. frame() leaves the encoded bytes in out and
    returns their length; encode() returns them as a memoryview of out, kept per
    length (the last _VIEWS lengths), so a stream of like frames allocates nothing.
    """

    def __init__(self):
        self.body = bytearray(_MAX_FRAME)
        self.out = bytearray(MAX_ENCODED)
        self._omv = memoryview(self.out)
        self._lens = [-1] * _VIEWS
        self._views = [None] * _VIEWS
        self._next = 0

    def frame(self, type_, seq, end):
        """Frame the payload body[HEADER_SIZE:end] into out; returns the encoded length."""
        if end + _CRC > _MAX_FRAME:
            raise ValueError("frame too long")
        return encode_frame(self.body, end, type_, seq, CRC_TABLE, _ONES, self.out)

    def encode(self, type_, seq, end):
        """Frame the payload body[HEADER_SIZE:end]; returns the encoded bytes (a view of out)."""
        n = self.frame(type_, seq, end)
        lens = self._lens
        for i in range(_VIEWS):
            if lens[i] == n:
                return self._views[i]
        i = self._next
        self._next = (i + 1) % _VIEWS
        lens[i] = n
        v = self._views[i] = self._omv[:n]
        return v
