"""The build hash HELLO carries: which app files this pod really runs.

The flash tool computes the same value over the files it uploads
(hypnolum/flash/bundle.py) and refuses a board that reports another, so a
partial, stale or tampered upload is caught at verify time.

Definition (docs/flashing.md): SHA-256 over the app files sorted by name;
for each, its path (UTF-8), a 0x00 byte, its length (u32 LE), its bytes. The
build hash is the digest's first 4 bytes as a u32 LE. The app files are
boot.py, main.py and hal.py / hal.mpy at the filesystem root and every file
in pod/; pod.json (the provisioning config) is not part of the build.

Computed once, at the first HELLO (before the watchdog starts). 0 means
unknown: no boot.py / main.py in the filesystem, as when the emulator runs
firmware/ straight from the repository.
"""
import hashlib
import struct

import hal

_ROOT_FILES = ("boot.py", "hal.mpy", "hal.py", "main.py")
_APP_DIR = "pod"
_CHUNK = 512  # bytes read at a time: no heap block as large as a file (the largest is ~12 KB)

_hash = None


def app_files():
    """Paths of the app files present, sorted."""
    root = hal.list_dir(".")
    names = [n for n in _ROOT_FILES if n in root]
    names += [_APP_DIR + "/" + n for n in hal.list_dir(_APP_DIR)]
    names.sort()
    return names


def compute():
    names = app_files()
    if "boot.py" not in names or "main.py" not in names:
        return 0
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    for name in names:
        f = hal.open_file(name)
        if f is None:
            continue  # gone since it was listed
        try:
            size = f.seek(0, 2)
            f.seek(0)
            h.update(name.encode())
            h.update(struct.pack("<BI", 0, size))
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
        finally:
            f.close()
    return struct.unpack("<I", h.digest()[:4])[0]


def build_hash():
    global _hash
    if _hash is None:
        _hash = compute()
    return _hash
