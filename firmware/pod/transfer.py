"""An update over the link: UPDATE_BEGIN, UPDATE_DATA, UPDATE_COMMIT, UPDATE_CONFIRM into the A/B store.

The host starts (or resumes) a transfer with UPDATE_BEGIN (its number, the
manifest's and the payload's lengths, the HMAC tag); the manifest then comes
as UPDATE_DATA part 0, gathered here; once whole, the store (pod/update.py,
imported only now: Slots.store()) authenticates it and prepares the inactive
slot, and the payload comes as part 1, written by the store chunk by chunk.
UPDATE_STATUS says where the pod is (state, the store's last refusal, bytes
held, the first offset missing): after each command and every _STATUS_EVERY
data frames, so the host paces its chunks by it and resends from `next` what
was lost. UPDATE_COMMIT verifies and switches, then the pod resets into the
new build on trial; UPDATE_CONFIRM, naming the build the host saw in HELLO,
keeps it (docs/update.md "The transfer").

Data frames are handled in the link's rx task like any command, one frame at a
time: EEG and the renderer run between them, and the host sends no faster than
the pod reports progress. A data frame allocates nothing here but its CRC
as read (a u32 may be a heap int on the board).
"""
import asyncio
import struct

import hal
from micropython import const

from pod import build, framing, wire
from pod.mem import copy as _copy

# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
_DATA_HEAD = const(9)  # update_data.data: after part u8, offset u32, crc u32
_DATA_OFFSET = const(1)  # update_data.offset
_BLOCK = const(64)  # UPDATE_BLOCK
_CHUNK = const(960)  # UPDATE_CHUNK
_TAG = const(32)  # UPDATE_TAG_SIZE
_E_AUTH = const(1)  # update_reason.auth (the store's codes, pod/update.py)
_E_MANIFEST = const(2)  # update_reason.manifest
_E_STATE = const(5)  # update_reason.state
_E_CRC = const(6)  # update_reason.crc
_E_RANGE = const(7)  # update_reason.range
_E_IO = const(10)  # update_reason.io
_E_NO_KEY = const(11)  # update_reason.no_key
_IDLE = const(0)  # update_state.idle (UPDATE_STATUS.state)
_MANIFEST = const(1)  # update_state.manifest
_DATA = const(2)  # update_state.data
_COMMITTED = const(3)  # update_state.committed
_REFUSED = const(4)  # update_state.refused
_CONFIRMED = const(5)  # update_state.confirmed
# end of wire layout
_MAX_MANIFEST = const(8192)  # update.MAX_MANIFEST
_STATUS_EVERY = const(4)  # data frames between two UPDATE_STATUS
_RESET_DELAY_MS = const(300)  # let ACK, UPDATE_STATUS and LOG leave before the reset


def nack_reason(code):
    """The NACK reason for a store code; UPDATE_STATUS.reason carries the code itself."""
    if code == _E_STATE:
        return wire.NACK_REASON_BUSY
    if code == _E_NO_KEY:
        return wire.NACK_REASON_UNSUPPORTED
    if code == _E_IO:
        return wire.NACK_REASON_UNAVAILABLE
    return wire.NACK_REASON_BAD_PARAM


def _mark(bits, b, e):
    # set bits b..e-1; how many were clear
    n = 0
    while b < e:
        m = 1 << (b & 7)
        if not bits[b >> 3] & m:
            bits[b >> 3] |= m
            n += 1
        b += 1
    return n


def _first_clear(bits, nblocks):
    b = 0
    while b < nblocks and bits[b >> 3] & (1 << (b & 7)):
        b += 1
    return b


class Transfer:
    """The pod's end of an update over the link; registers its messages with the link."""

    def __init__(self, lk, slots_):
        self._lk = lk
        self._slots = slots_
        self.state = _IDLE
        self.reason = 0  # the store's last refusal (0: none)
        self.transfer = 0
        self._tag = None
        self._man = None  # the manifest as it arrives
        self._mlen = 0
        self._mbits = None  # one bit per _BLOCK of the manifest received
        self._mblocks = 0
        self._mgot = 0
        self._total = 0
        self._store = None
        self._scratch = None  # a chunk and its CRC, to check it (framing.crc32_ok)
        self._frames = 0
        self.stray = 0  # data frames that belong to no part under way
        self.refused = 0  # chunks the store refused (CRC, range)
        lk.register(wire.T_UPDATE_BEGIN, self.begin)
        lk.register(wire.T_UPDATE_COMMIT, self.commit)
        lk.register(wire.T_UPDATE_CONFIRM, self.confirm)
        lk.register_raw(wire.T_UPDATE_DATA, self._on_data)

    # ------------------------------------------------------------ status
    def send_status(self):
        st = self.state
        if st == _DATA:
            got, total = self._store.progress()
            nxt = self._store.missing()
        elif st == _MANIFEST:
            got = self._mgot * _BLOCK
            if self._mbits[(self._mblocks - 1) >> 3] & (1 << ((self._mblocks - 1) & 7)):
                got -= self._mblocks * _BLOCK - self._mlen
            total = self._mlen
            nxt = min(_first_clear(self._mbits, self._mblocks) * _BLOCK, total)
        elif st == _COMMITTED:
            got = total = nxt = self._total
        else:
            got = total = nxt = 0
        lk = self._lk
        lk.send(wire.T_UPDATE_STATUS,
                wire.pack_update_status(lk.body, _HDR, self.transfer, st, self.reason, got, total, nxt))

    def _refuse(self, code):
        self.reason = code
        self.send_status()
        return nack_reason(code)

    # ------------------------------------------------------------ begin
    def begin(self, transfer, manifest_len, total, tag):
        sl = self._slots
        tag = bytes(tag)  # a memoryview into the frame: compared and kept as bytes
        if sl.active is None or sl.trial or self.state == _COMMITTED:
            return self._refuse(_E_STATE)  # no slots, a build awaiting confirmation, resetting
        if len(tag) != _TAG:
            return self._refuse(_E_AUTH)
        if not 0 < manifest_len <= _MAX_MANIFEST or total <= 0:
            return self._refuse(_E_MANIFEST)
        if (self.state in (_MANIFEST, _DATA) and transfer == self.transfer and manifest_len == self._mlen
                and total == self._total and self._tag == tag):
            self.send_status()  # the same transfer again: it resumes where it is
            return 0
        self.transfer = transfer
        self._tag = tag
        self._mlen = manifest_len
        self._man = bytearray(manifest_len)
        self._mblocks = (manifest_len + _BLOCK - 1) // _BLOCK
        self._mbits = bytearray((self._mblocks + 7) // 8)
        self._mgot = 0
        self._total = total
        self._frames = 0
        self.reason = 0
        if self._scratch is None:
            self._scratch = bytearray(_CHUNK + 4)
        self.state = _MANIFEST
        self.send_status()
        return 0

    # ------------------------------------------------------------ data
    def _on_data(self, seq, frame, end):
        start = _HDR + _DATA_HEAD
        n = end - start
        if n < 0:
            raise ValueError("update_data: short payload")  # NACKed bad_message, as any payload that does not decode
        if n == 0:
            self.stray += 1
            return
        part = frame[_HDR]
        offset, crc = struct.unpack_from("<II", frame, _HDR + _DATA_OFFSET)
        st = self.state
        if st == _DATA and part == wire.UPDATE_PART_PAYLOAD:
            store = self._store
            r = store.write(offset, frame, crc, start, n)
            if r:
                self.refused += 1
                self.reason = r
            self._tick(r or store.complete())  # the last chunk is reported at once
        elif st == _MANIFEST and part == wire.UPDATE_PART_MANIFEST:
            self._manifest_chunk(offset, frame, start, n, crc)
        else:
            self.stray += 1  # a chunk of a part not under way (late, or no transfer): dropped

    def _tick(self, now):
        self._frames += 1
        if now or self._frames >= _STATUS_EVERY:
            self._frames = 0
            self.send_status()

    def _manifest_chunk(self, offset, frame, start, n, crc):
        mlen = self._mlen
        if offset % _BLOCK or n > _CHUNK or offset + n > mlen or (n % _BLOCK and offset + n != mlen):
            self.refused += 1
            self.reason = _E_RANGE
            self._tick(_E_RANGE)
            return
        s = self._scratch
        _copy(s, 0, frame, start, n)
        struct.pack_into("<I", s, n, crc)
        if not framing.crc32_ok(s, n):
            self.refused += 1
            self.reason = _E_CRC
            self._tick(_E_CRC)
            return
        _copy(self._man, offset, s, 0, n)
        self._mgot += _mark(self._mbits, offset // _BLOCK, (offset + n + _BLOCK - 1) // _BLOCK)
        if self._mgot == self._mblocks:
            self._open()
        else:
            self._tick(0)

    def _open(self):
        # the whole manifest: the store authenticates it and prepares the inactive slot (or resumes)
        store = self._slots.store()
        r = store.begin(self._man, self._tag)
        if not r and store.progress()[1] != self._total:
            r = _E_MANIFEST  # its files do not add up to what UPDATE_BEGIN announced
        self._man = None
        self._frames = 0
        if r:
            self.state = _REFUSED
            self.reason = r
            self._lk.send_log(wire.LOG_LEVEL_WARNING, "update: manifest refused (%d)" % r)
        else:
            self._store = store
            self.state = _DATA
            self.reason = 0
        self.send_status()

    # ------------------------------------------------------------ commit, confirm
    def commit(self, transfer, confirm_ms):
        if self.state != _DATA or transfer != self.transfer:
            return self._refuse(_E_STATE)
        r = self._store.commit(confirm_ms) if confirm_ms else self._store.commit()
        if r:
            return self._refuse(r)
        self.state = _COMMITTED
        self.reason = 0
        self.send_status()
        self._lk.send_log(wire.LOG_LEVEL_INFO, "update: build %08x verified; resetting into it" % self._store.build)
        asyncio.create_task(self._reset())
        return 0

    async def _reset(self):
        await asyncio.sleep_ms(_RESET_DELAY_MS)
        hal.reset()

    def confirm(self, build_hash):
        sl = self._slots
        if build_hash != build.build_hash():
            self._refuse(_E_STATE)
            return wire.NACK_REASON_BAD_PARAM  # the host saw another build than the one running
        r = sl.confirm()
        if r == _E_STATE and sl.active is not None and not sl.trial:
            r = 0  # confirmed already (a retry after a lost ACK)
        if r:
            return self._refuse(r)
        self.state = _CONFIRMED
        self.reason = 0
        self.send_status()
        return 0
