"""The A/B update store: a new build is written into the inactive slot, verified, then switched to.

The app lives in slot directory a/ or b/ (hal, pod/); boot.py and main.py stay
at the root and are never updated. slots.json, written whole (a temp file,
then a rename: atomic on littlefs), says which slot is active and whether it
is on trial; boot.py reads it before anything else (docs/update.md).

An update: begin(manifest, tag) with the manifest (build hash, then path,
size and sha256 per file) and its HMAC-SHA256 under the pod's update key;
write(offset, data, crc) per chunk, at its offset in the files concatenated
in manifest order, in any order, repeats harmless; commit() verifies every
file's sha256 and switches slots.json to the new slot on trial; the caller
then resets. The host confirms the build with confirm(); a reset before that
rolls back to the previous slot (boot.py), and supervise() resets the pod
when no confirmation came in time. Nothing here touches the active slot.

Every method returns OK (0) or a reason code (E_*). write() allocates nothing
beyond the file object of each file it moves to.
"""
import asyncio
import hashlib
import json
import struct

import hal
from micropython import const

from pod import framing
from pod.slots import E_IO, E_STATE, OK, SLOTS, STATE, TRIAL_MS, Slots, other, read_state, write_state  # noqa: F401
from pod.mem import copy as _copy

# wire layout (values generated from protocol/messages.py by `make codec`)
E_AUTH = const(1)  # update_reason.auth: the tag is not the manifest's HMAC under this pod's key
E_MANIFEST = const(2)  # update_reason.manifest: not a manifest (docs/update.md "The manifest")
E_PATH = const(3)  # update_reason.path: a path outside the slot, or twice, or a file where a directory is
E_SPACE = const(4)  # update_reason.space: the files do not fit in the free space
E_CRC = const(6)  # update_reason.crc: the chunk's CRC-32 does not match its bytes
E_RANGE = const(7)  # update_reason.range: the chunk is outside the bundle, off a block boundary or too long
E_INCOMPLETE = const(8)  # update_reason.incomplete: commit before every byte arrived
E_HASH = const(9)  # update_reason.hash: a file's sha256 differs: it is written again (its bytes count as missing)
E_NO_KEY = const(11)  # update_reason.no_key: no update key was provisioned (update.key)
# end of wire layout

KEY_FILE = "update.key"
PENDING = "update.man"  # slot letter, tag, manifest of the update under way
KEY_SIZE = const(32)
BLOCK = const(64)  # chunks start on a multiple of this; their length is one too, or they end the bundle
MAX_CHUNK = const(1024)
MAX_MANIFEST = const(8192)
MAX_FILES = const(128)
MAX_PATH = const(64)
MAX_BUNDLE = const(4 * 1024 * 1024)  # more than an app slot ever needs; its block bitmap is 8 KB
MAGIC = b"HLU1"
_HEAD = const(11)  # magic 4s, version u8, build hash u32, file count u16
_ENTRY = const(36)  # after the path: size u32, sha256 32 bytes
_FS_BLOCK = const(4096)  # littlefs block on an ESP32 (ports/esp32/esp32_partition.c:42)
_RESERVE = const(8 * 4096)  # kept free: slots.json, pod.json, littlefs metadata
_READ = const(512)


def load_key():
    """The update key provisioned at flashing (32 bytes), or None."""
    key = hal.read_file(KEY_FILE)
    return key if key is not None and len(key) == KEY_SIZE else None


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) over hashlib.sha256 (extmod/modhashlib.c:84-162)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = bytearray(64)
    k[:len(key)] = key
    for i in range(64):
        k[i] ^= 0x36
    h = hashlib.sha256(k)
    h.update(msg)
    inner = h.digest()
    for i in range(64):
        k[i] ^= 0x36 ^ 0x5C
    h = hashlib.sha256(k)
    h.update(inner)
    return h.digest()


def _same(a, b):
    # compared in constant time: how much of a tag matched is not measurable
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _path_ok(p):
    # one or two components of [A-Za-z0-9_.-], none empty or starting with "."
    if not 0 < len(p) <= MAX_PATH:
        return False
    parts = p.split(b"/")
    if len(parts) > 2:
        return False
    for part in parts:
        if not part or part[0] == 0x2E:
            return False
        for c in part:
            if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in b"_.-"):
                return False
    return True


def parse_manifest(m):
    """(build hash, [(path, size, sha256)]) of manifest m; ValueError(E_MANIFEST or E_PATH) if it is not one."""
    if len(m) < _HEAD or m[:4] != MAGIC or m[4] != 1:
        raise ValueError(E_MANIFEST)
    build, count = struct.unpack_from("<IH", m, 5)
    if not 0 < count <= MAX_FILES:
        raise ValueError(E_MANIFEST)
    files = []
    pos = _HEAD
    for _ in range(count):
        if pos >= len(m):
            raise ValueError(E_MANIFEST)
        n = m[pos]
        pos += 1
        if pos + n + _ENTRY > len(m):
            raise ValueError(E_MANIFEST)
        path = bytes(m[pos:pos + n])
        if not _path_ok(path):
            raise ValueError(E_PATH)
        size = struct.unpack_from("<I", m, pos + n)[0]
        files.append((path.decode(), size, bytes(m[pos + n + 4:pos + n + _ENTRY])))
        pos += n + _ENTRY
    if pos != len(m):
        raise ValueError(E_MANIFEST)
    paths = [f[0] for f in files]
    dirs = [p.split("/")[0] for p in paths if "/" in p]
    for i, p in enumerate(paths):
        if p in paths[i + 1:] or p in dirs:
            raise ValueError(E_PATH)
    return build, files


def _blocks(size):
    return (size + _FS_BLOCK - 1) // _FS_BLOCK * _FS_BLOCK


def _usage(slot):
    # bytes the files in a slot take, in whole filesystem blocks
    n = 0
    for d in [""] + [x + "/" for x in hal.list_dirs(slot)]:
        for name in hal.list_dir(slot + "/" + d):
            n += _blocks(hal.file_size(slot + "/" + d + name))
    return n


def _wipe(slot):
    for d in hal.list_dirs(slot):
        for name in hal.list_dir(slot + "/" + d):
            hal.remove(slot + "/" + d + "/" + name)
        hal.remove(slot + "/" + d)
    for name in hal.list_dir(slot):
        hal.remove(slot + "/" + name)


class Store(Slots):
    """The pod's side of an update (docs/update.md). key: the update key, or None.
    What the app needs at boot (the slots' state, confirm, supervise) is Slots'."""

    def __init__(self, key):
        Slots.__init__(self)
        self._key = key
        self.build = 0  # the build hash of the update under way
        self._slot = None
        self._bits = None  # one bit per BLOCK received
        self._closed()
        self._buf = bytearray(MAX_CHUNK + 4)

    def _closed(self):
        self._f = None
        self._fi = -1

    def _close(self):
        f = self._f
        self._closed()
        if f is not None:
            f.close()

    # ------------------------------------------------------------ begin
    def begin(self, manifest, tag):
        """Start writing the build manifest describes into the inactive slot, or resume it."""
        if self._key is None:
            return E_NO_KEY
        if self.active is None or self.trial:
            return E_STATE
        if len(manifest) > MAX_MANIFEST:
            return E_MANIFEST
        if not _same(hmac_sha256(self._key, manifest), tag):
            return E_AUTH
        try:
            build, files = parse_manifest(manifest)
        except ValueError as e:
            return e.args[0]
        slot = other(self.active)
        need = _RESERVE
        total = 0
        for f in files:
            need += _blocks(f[1])
            total += f[1]
        try:
            if total > MAX_BUNDLE or need > hal.fs_free() + _usage(slot):
                return E_SPACE
            self._close()
            self._bits = None
            record = slot.encode() + bytes(tag) + bytes(manifest)
            resume = hal.read_file(PENDING) == record
            if not resume:
                _wipe(slot)
            hal.make_dir(slot)
            for d in files:
                if "/" in d[0]:
                    hal.make_dir(slot + "/" + d[0].split("/")[0])
            if not resume:
                hal.write_file(PENDING, record)
        except OSError:
            return E_IO
        self._start(slot, build, files)
        if resume:
            self._rescan()
        return OK

    def _start(self, slot, build, files):
        self._slot = slot
        self.build = build
        self._paths = [slot + "/" + f[0] for f in files]
        self._sizes = [f[1] for f in files]
        self._shas = [f[2] for f in files]
        self._starts = []
        pos = 0
        for size in self._sizes:
            self._starts.append(pos)
            pos += size
        self._total = pos
        self._nblocks = (pos + BLOCK - 1) // BLOCK
        self._bits = bytearray((self._nblocks + 7) // 8)
        self._got = 0
        self._hint = 0  # every block before this one is received (missing())

    def _rescan(self):
        # after a reset, a file counts as received only when it is whole and its sha256 matches
        ok = [self._check(i) for i in range(len(self._paths))]
        j = 0
        n = len(ok)
        for b in range(self._nblocks):
            lo = b * BLOCK
            hi = min(lo + BLOCK, self._total)
            while j < n and self._starts[j] + self._sizes[j] <= lo:
                j += 1
            k = j
            whole = True
            while k < n and self._starts[k] < hi:
                if self._sizes[k] and not ok[k]:
                    whole = False
                    break
                k += 1
            if whole:
                self._mark(b, b + 1)

    # ------------------------------------------------------------ write
    def write(self, offset, data, crc, start=0, n=-1):
        """Chunk data[start:start+n] (n < 0: to the end) at offset of the bundle, CRC-32 crc."""
        if self._bits is None:
            return E_STATE
        if n < 0:
            n = len(data) - start
        end = offset + n
        if (n <= 0 or n > MAX_CHUNK or start < 0 or start + n > len(data) or offset < 0 or offset % BLOCK
                or end > self._total or (n % BLOCK and end != self._total)):
            return E_RANGE
        if crc < 0 or crc > 0xFFFFFFFF:
            return E_CRC
        buf = self._buf
        _copy(buf, 0, data, start, n)
        struct.pack_into("<I", buf, n, crc)
        if not framing.crc32_ok(buf, n):
            return E_CRC
        try:
            self._put(offset, n)
        except OSError:
            self._close()
            return E_IO
        self._mark(offset // BLOCK, (end + BLOCK - 1) // BLOCK)
        return OK

    def _file_at(self, pos):
        # the last file starting at or before pos: the one holding it (empty files skipped)
        starts = self._starts
        lo = 0
        hi = len(starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _put(self, pos, n):
        src = 0
        while n:
            i = self._file_at(pos)
            within = pos - self._starts[i]
            k = self._sizes[i] - within
            if k > n:
                k = n
            if i != self._fi:
                self._close()
                self._f = hal.open_rw(self._paths[i])
                self._fi = i
            f = self._f
            f.seek(within)
            f.write(self._buf, src, k)
            pos += k
            src += k
            n -= k

    def _mark(self, b, e):
        bits = self._bits
        while b < e:
            m = 1 << (b & 7)
            if not bits[b >> 3] & m:
                bits[b >> 3] |= m
                self._got += 1
            b += 1

    def _unmark(self, i):
        # file i's blocks count as missing again
        lo = self._starts[i] // BLOCK
        hi = (self._starts[i] + self._sizes[i] + BLOCK - 1) // BLOCK
        bits = self._bits
        self._hint = 0
        for b in range(lo, hi):
            m = 1 << (b & 7)
            if bits[b >> 3] & m:
                bits[b >> 3] &= ~m & 0xFF
                self._got -= 1

    def progress(self):
        """(bytes received, bytes in the bundle); (0, 0) with no update under way."""
        if self._bits is None:
            return 0, 0
        got = self._got * BLOCK
        last = self._nblocks - 1
        if self._bits[last >> 3] & (1 << (last & 7)):
            got -= self._nblocks * BLOCK - self._total
        return got, self._total

    def complete(self):
        """True once every byte of the update under way has arrived."""
        return self._bits is not None and self._got >= self._nblocks

    def missing(self):
        """The first offset of the bundle not yet received (its size: every byte is)."""
        if self._bits is None:
            return 0
        bits = self._bits
        i = self._hint >> 3
        n = len(bits)
        while i < n and bits[i] == 0xFF:
            i += 1
        b = i << 3
        while b < self._nblocks and bits[b >> 3] & (1 << (b & 7)):
            b += 1
        self._hint = b & ~7
        return min(b * BLOCK, self._total)

    # ------------------------------------------------------------ commit, confirm
    def _check(self, i):
        path = self._paths[i]
        if hal.file_size(path) != self._sizes[i]:
            return False
        f = hal.open_file(path)
        if f is None:
            return False
        h = hashlib.sha256()
        view = memoryview(self._buf)
        try:
            while True:
                n = f.readinto(view[:_READ])
                if not n:
                    break
                h.update(view[:n])
        finally:
            f.close()
        return h.digest() == self._shas[i]

    def commit(self, confirm_ms=TRIAL_MS):
        """Verify every file, then make the new slot active on trial; the caller resets.
        Refused: nothing changes but the inactive slot (a file that failed is written again)."""
        if self._bits is None:
            return E_STATE
        try:
            self._close()
            if self._got < self._nblocks:
                return E_INCOMPLETE
            bad = False
            for i in range(len(self._paths)):
                if not self._sizes[i] and hal.file_size(self._paths[i]) < 0:
                    hal.open_rw(self._paths[i]).close()  # an empty file has no chunk
                if not self._check(i):
                    hal.remove(self._paths[i])
                    self._unmark(i)
                    bad = True
            if bad:
                return E_HASH
            self._drop_strays()
            st = {"active": self._slot, "trial": 1, "tried": 0, "fails": 0, "safe": 0, "back": 0,
                  "wait": confirm_ms}
            write_state(st)  # the switch
        except OSError:
            return E_IO
        self.state = st
        self.trial = True
        self._bits = None
        hal.remove(PENDING)
        return OK

    def _drop_strays(self):
        # files in the slot that the manifest does not name (the build hash covers every file)
        slot = self._slot
        for d in [""] + [x + "/" for x in hal.list_dirs(slot)]:
            for name in hal.list_dir(slot + "/" + d):
                if slot + "/" + d + name not in self._paths:
                    hal.remove(slot + "/" + d + name)
