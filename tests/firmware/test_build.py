# The build hash HELLO carries (pod/build.py), over an app larger than the heap.
import hashlib
import os
import struct

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


def _reference(names):
    # docs/flashing.md: per file, sorted by name: path, 0x00, length u32 LE, bytes
    h = hashlib.sha256()
    buf = bytearray(4096)
    for name in names:
        size = os.stat(name)[6]
        h.update(name.encode())
        h.update(struct.pack("<BI", 0, size))
        with open(name, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf if n == len(buf) else buf[:n])
    return struct.unpack("<I", h.digest()[:4])[0]


def test_build_hash_reads_each_file_in_pieces():
    # a file the heap cannot hold in one block: hashed piece by piece, as defined
    made = ["boot.py", "main.py", "pod/big.mpy", "pod/small.mpy"]
    try:
        os.mkdir("pod")
    except OSError:
        pass
    try:
        _write("boot.py", 100, 1)
        _write("main.py", 200, 2)
        _write("pod/big.mpy", _BIG, 3)
        _write("pod/small.mpy", 7, 4)
        assert build.app_files() == sorted(made)
        assert build.compute() == _reference(sorted(made))
    finally:
        for name in made:
            try:
                os.remove(name)
            except OSError:
                pass


def test_no_app_files_means_unknown():
    assert build.compute() == 0  # firmware/ run straight from the repository
