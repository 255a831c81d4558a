"""The build hash HELLO carries: which app files this pod really runs.

The flash tool computes the same value over the files it uploads
(hypnolum/flash/bundle.py) and refuses a board that reports another, so a
partial, stale or tampered upload is caught at verify time; an update's
manifest carries it too (docs/update.md).

Definition (docs/flashing.md): SHA-256 over the files of the active slot
(slots.json, pod/slots.py) sorted by their path inside the slot; for each,
that path (UTF-8), a 0x00 byte, its length (u32 LE), its bytes. The build
hash is the digest's first 4 bytes as a u32 LE. The slot holds hal.mpy (or
hal.py) and pod/; boot.py, main.py (never updated), pod.json (the
provisioning config) and the update key are outside it.

Computed once, at the first HELLO (before the watchdog starts). 0 means
unknown: no slots.json, as when the emulator runs firmware/ straight from the
repository.
"""
import hashlib
import struct

import hal

from pod import slots

_CHUNK = 512  # bytes read at a time: no heap block as large as a file (the largest is ~12 KB)

_hash = None


def app_files(slot):
    """Paths inside slot of its files (one directory level down), sorted."""
    names = list(hal.list_dir(slot))
    for d in hal.list_dirs(slot):
        names += [d + "/" + n for n in hal.list_dir(slot + "/" + d)]
    names.sort()
    return names


def compute():
    st = slots.read_state()
    if st is None:
        return 0
    slot = st["active"]
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    for name in app_files(slot):
        f = hal.open_file(slot + "/" + name)
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
