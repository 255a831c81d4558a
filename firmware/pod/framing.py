"""Frames on the pod link: COBS( version | type | seq | payload | crc32 ) 0x00.

Same format as protocol/codec.py on the host. The CRC is CRC-32/IEEE
(binascii.crc32) over header + payload, little-endian. COBS removes every 0x00
from a frame, so a receiver that starts mid-stream or meets garbage is back in
step at the next 0x00.

Both directions work in buffers allocated once: the decoder un-COBSes byte by
byte straight into its frame buffer, the encoder writes into its output buffer.
The CRC is a viper table kernel that reads and writes the four CRC bytes in
place: binascii.crc32 returns a u32, a heap int on the board 3 times in 4.
"""
import micropython
from micropython import const

from pod import wire

_MAX_FRAME = const(1024)  # == wire.MAX_FRAME, checked below
_HDR = const(4)  # == wire.HEADER_SIZE
_CRC = const(4)  # == wire.CRC_SIZE
# COBS adds one code byte per 254 data bytes, plus one; then the 0x00 delimiter.
MAX_ENCODED = const(_MAX_FRAME + _MAX_FRAME // 254 + 2)

if wire.MAX_FRAME != _MAX_FRAME or wire.HEADER_SIZE != _HDR or wire.CRC_SIZE != _CRC:
    raise ImportError("framing constants do not match wire.py")

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


class Decoder:
    """Stream decoder. feed(buf, n) calls on_frame(type, seq, frame, end) per good frame.

    frame is the decoder's own buffer (header at 0, payload at HEADER_SIZE..end);
    it is valid only during the call. Bad frames are counted in errors, never raised.
    """

    def __init__(self, on_frame):
        self.on_frame = on_frame
        self.frame = bytearray(_MAX_FRAME)
        self.frames = 0
        self.errors = bytearray(N_ERRORS)  # small counts per kind; total in .error_count
        self.error_count = 0
        self._n = 0  # bytes decoded so far in this frame
        self._left = 0  # data bytes left in the current COBS block
        self._code = 0  # code byte of the current block (0 = frame not started)
        self._skip = False  # discarding an oversize frame until its delimiter

    def _error(self, kind):
        self.error_count += 1
        if self.errors[kind] < 255:
            self.errors[kind] += 1

    def reset(self):
        self._n = 0
        self._left = 0
        self._code = 0
        self._skip = False

    def feed(self, data, n):
        """Consume data[0:n]."""
        frame = self.frame
        fn = self._n
        left = self._left
        code = self._code
        skip = self._skip
        for i in range(n):
            b = data[i]
            if b == 0:
                if skip:
                    skip = False
                elif left:
                    self._error(ERR_COBS)
                elif code:
                    self._n = fn
                    self._finish()
                fn = left = code = 0
            elif skip:
                pass
            elif left:
                if fn >= _MAX_FRAME:
                    self._error(ERR_OVERSIZE)
                    skip = True
                else:
                    frame[fn] = b
                    fn += 1
                    left -= 1
            else:
                # a code byte; the block before it ended with an implied 0x00
                # unless it was a full 254-byte block (code 0xFF)
                if code and code != 0xFF:
                    if fn >= _MAX_FRAME:
                        self._error(ERR_OVERSIZE)
                        skip = True
                        continue
                    frame[fn] = 0
                    fn += 1
                code = b
                left = b - 1
        self._n = fn
        self._left = left
        self._code = code
        self._skip = skip

    def _finish(self):
        n = self._n
        frame = self.frame
        if n < _HDR + _CRC:
            self._error(ERR_SHORT)
            return
        end = n - _CRC
        if _crc(frame, end, CRC_TABLE, _ONES, 1) != 1:
            self._error(ERR_CRC)
            return
        if frame[0] != wire.PROTOCOL_VERSION:
            self._error(ERR_VERSION)
            return
        self.frames += 1
        self.on_frame(frame[1], frame[2] | frame[3] << 8, frame, end)


@micropython.native
def cobs_encode(src, n, dst):
    """COBS-encode src[0:n] into dst and append the 0x00 delimiter; returns the length.

    Byte-identical to the host's `cobs` package (no trailing code byte after a
    final full 254-byte block), so shared test vectors hold for both ends.
    """
    code_at = 0
    o = 1
    code = 1
    after_full = False
    for i in range(n):
        b = src[i]
        if b:
            dst[o] = b
            o += 1
            code += 1
            after_full = False
            if code == 0xFF:
                dst[code_at] = code
                code_at = o
                o += 1
                code = 1
                after_full = True
        else:
            dst[code_at] = code
            code_at = o
            o += 1
            code = 1
            after_full = False
    if after_full:
        o -= 1  # the slot reserved for another code byte is not needed
        dst[o] = 0
        return o + 1
    dst[code_at] = code
    dst[o] = 0
    return o + 1


class Encoder:
    """Builds frames in place: pack a payload into body at HEADER_SIZE, then encode().

    body and out are allocated once; encode() returns a memoryview of out, kept
    per length (the last _VIEWS lengths), so a stream of like frames allocates nothing.
    """

    def __init__(self):
        self.body = bytearray(_MAX_FRAME)
        self.out = bytearray(MAX_ENCODED)
        self._omv = memoryview(self.out)
        self._lens = [-1] * _VIEWS
        self._views = [None] * _VIEWS
        self._next = 0

    def encode(self, type_, seq, end):
        """Frame the payload body[HEADER_SIZE:end]; returns the encoded bytes (a view of out)."""
        body = self.body
        if end + _CRC > _MAX_FRAME:
            raise ValueError("frame too long")
        body[0] = wire.PROTOCOL_VERSION
        body[1] = type_
        body[2] = seq & 0xFF
        body[3] = (seq >> 8) & 0xFF
        _crc(body, end, CRC_TABLE, _ONES, 0)
        n = cobs_encode(body, end + _CRC, self.out)
        lens = self._lens
        for i in range(_VIEWS):
            if lens[i] == n:
                return self._views[i]
        i = self._next
        self._next = (i + 1) % _VIEWS
        lens[i] = n
        v = self._views[i] = self._omv[:n]
        return v
