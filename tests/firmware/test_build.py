# The build hash HELLO carries (pod/build.py): the active slot's files, over an app larger than the heap.
import hashlib
import os
import struct

import hal
from pod import build

_BIG = 3 * 1024 * 1024  # larger than this interpreter's whole heap (2 MB)


def _write(path, size, seed):
    chunk = bytearray(1024)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            for i in range(n):
                chunk[i] = (seed + left + i) & 0xFF
            f.write(chunk if n == len(chunk) else chunk[:n])
            left -= n


def _reference(slot, names):
    # docs/flashing.md: per file, sorted by its path in the slot: path, 0x00, length u32 LE, bytes
    h = hashlib.sha256()
    buf = bytearray(4096)
    for name in names:
        size = os.stat(slot + "/" + name)[6]
        h.update(name.encode())
        h.update(struct.pack("<BI", 0, size))
        with open(slot + "/" + name, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf if n == len(buf) else buf[:n])
    return struct.unpack("<I", h.digest()[:4])[0]


def _mkdirs(*names):
    for name in names:
        try:
            os.mkdir(name)
        except OSError:
            pass


def _clean(paths):
    for name in paths:
        try:
            os.remove(name)
        except OSError:
            pass


def test_build_hash_reads_each_file_in_pieces():
    # a file the heap cannot hold in one block: hashed piece by piece, as defined
    made = ["hal.mpy", "pod/big.mpy", "pod/small.mpy"]
    _mkdirs("b", "b/pod")
    try:
        hal.write_file("slots.json", b'{"active": "b"}')
        _write("boot.py", 100, 1)  # outside the slot: not part of the build
        _write("b/hal.mpy", 200, 2)
        _write("b/pod/big.mpy", _BIG, 3)
        _write("b/pod/small.mpy", 7, 4)
        assert build.app_files("b") == sorted(made)
        assert build.compute() == _reference("b", sorted(made))
        before = build.compute()
        _write("boot.py", 101, 1)
        assert build.compute() == before
    finally:
        _clean(["b/" + n for n in made] + ["boot.py", "slots.json"])


def test_no_slots_means_unknown():
    assert build.compute() == 0  # firmware/ run straight from the repository
