# The A/B update store (pod/update.py) on the real interpreter, over the emulator's files.
import binascii
import hashlib
import json
import os
import struct

import hal
from pod import update

KEY = bytes(range(32))
OLD = {"hal.mpy": b"old hal", "pod/app.mpy": b"old app" * 50}
NEW = {"hal.mpy": b"new hal" * 30, "pod/__init__.mpy": b"", "pod/app.mpy": bytes(range(256)) * 9,
       "pod/extra.mpy": b"x" * 100}


def _manifest(files, build=0x1234):
    out = bytearray(b"HLU1\x01" + struct.pack("<IH", build, len(files)))
    for path in sorted(files):
        data = files[path]
        out += bytes([len(path)]) + path.encode() + struct.pack("<I", len(data)) + hashlib.sha256(data).digest()
    return bytes(out)


def _payload(files):
    return b"".join(files[p] for p in sorted(files))


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        try:
            for e in os.ilistdir(path):
                _rm(path + "/" + e[0])
            os.rmdir(path)
        except OSError:
            pass


def _fresh():
    for name in ("a", "b", "slots.json", "update.man", "update.key"):
        _rm(name)
    for path, data in OLD.items():
        for d in ("a", "a/pod"):
            hal.make_dir(d)
        hal.write_file("a/" + path, data)
    hal.write_file("slots.json", json.dumps({"active": "a", "trial": 0, "tried": 0, "fails": 1}))
    hal.write_file("update.key", KEY)


def _send(store, data, chunk=192, order=None, base=0, end=None):
    # chunks of data[base:end] at their offsets in data
    end = len(data) if end is None else end
    starts = list(range(base, end, chunk))
    for off in order(starts) if order else starts:
        piece = data[off:min(off + chunk, end)]
        assert store.write(off, piece, binascii.crc32(piece)) == update.OK, off


def _slot_files(slot):
    out = {}
    for name in os.listdir(slot):
        if name == "pod":
            for inner in os.listdir(slot + "/pod"):
                out["pod/" + inner] = open(slot + "/pod/" + inner, "rb").read()
        else:
            out[name] = open(slot + "/" + name, "rb").read()
    return out


def test_hmac_sha256_is_rfc_4231():
    # RFC 4231 test case 2
    assert binascii.hexlify(update.hmac_sha256(b"Jefe", b"what do ya want for nothing?")) == \
        b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_update_written_verified_switched_and_confirmed():
    _fresh()
    m = _manifest(NEW)
    store = update.Store(update.load_key())
    assert store.begin(m, update.hmac_sha256(KEY, m)) == update.OK
    data = _payload(NEW)
    assert store.progress() == (0, len(data))
    # backwards, with a repeat: order does not matter
    _send(store, data, order=lambda s: list(reversed(s)) + [s[0]])
    assert store.progress() == (len(data), len(data))
    assert _slot_files("a") == OLD  # the active slot untouched
    assert store.commit() == update.OK
    assert _slot_files("b") == NEW and _slot_files("a") == OLD
    st = update.read_state()
    assert (st["active"], st["trial"], st["tried"], st["wait"]) == ("b", 1, 0, update.TRIAL_MS)
    assert "update.man" not in os.listdir()
    assert store.begin(m, update.hmac_sha256(KEY, m)) == update.E_STATE  # a build on trial: confirm first
    assert store.confirm() == update.OK
    assert update.read_state()["trial"] == 0
    assert store.confirm() == update.E_STATE


def test_refusals_change_nothing():
    _fresh()
    state = open("slots.json").read()
    m = _manifest(NEW)
    tag = update.hmac_sha256(KEY, m)
    assert update.Store(None).begin(m, tag) == update.E_NO_KEY
    store = update.Store(KEY)
    assert store.begin(m, b"\0" * 32) == update.E_AUTH  # unauthenticated
    assert store.begin(m[:-1] + b"\0", tag) == update.E_AUTH  # tampered manifest
    assert store.begin(m, update.hmac_sha256(b"another pod's key" + bytes(15), m)) == update.E_AUTH
    short = m[:-5]  # truncated, but tagged
    assert store.begin(short, update.hmac_sha256(KEY, short)) == update.E_MANIFEST
    for bad in ("../boot.py", "/boot.py", "a/b/c.mpy", ".hidden", "pod/../x"):
        mm = _manifest({bad: b"1"})
        assert store.begin(mm, update.hmac_sha256(KEY, mm)) == update.E_PATH, bad
    big = _manifest({"hal.mpy": b"", "pod/app.mpy": b""}).replace(struct.pack("<I", 0) + hashlib.sha256(b"").digest(),
                                                                   struct.pack("<I", 1 << 30) + bytes(32), 1)
    assert store.begin(big, update.hmac_sha256(KEY, big)) == update.E_SPACE  # more than a pod's flash
    os.putenv("HYPNOLUM_FS_BYTES", "40960")  # a small filesystem: 40 KB, the pod's files use 16 KB of it
    try:
        assert store.begin(m, tag) == update.E_SPACE
    finally:
        os.unsetenv("HYPNOLUM_FS_BYTES")
    assert store.write(0, b"x" * 64, binascii.crc32(b"x" * 64)) == update.E_STATE  # nothing begun
    assert store.commit() == update.E_STATE
    assert open("slots.json").read() == state and _slot_files("a") == OLD


def test_bad_chunks_and_a_tampered_bundle_are_refused():
    _fresh()
    state = open("slots.json").read()
    m = _manifest(NEW)
    store = update.Store(KEY)
    assert store.begin(m, update.hmac_sha256(KEY, m)) == update.OK
    data = _payload(NEW)
    assert store.write(0, data[:128], binascii.crc32(data[:128]) ^ 1) == update.E_CRC
    assert store.write(10, data[10:74], binascii.crc32(data[10:74])) == update.E_RANGE  # off a block
    assert store.write(len(data), b"x", binascii.crc32(b"x")) == update.E_RANGE
    assert store.progress()[0] == 0
    _send(store, data, end=2496)
    assert store.commit() == update.E_INCOMPLETE  # truncated
    bad = bytearray(data)
    bad[700] ^= 0xFF  # changed on the way, with a CRC that matches the change
    _send(store, bytes(bad))
    assert store.commit() == update.E_HASH
    assert open("slots.json").read() == state and _slot_files("a") == OLD
    got, total = store.progress()
    assert got < total  # the file that failed is missing again
    _send(store, data)  # sent again, right
    assert store.commit() == update.OK and update.read_state()["active"] == "b"


def test_resume_after_a_reset_keeps_whole_files():
    _fresh()
    m = _manifest(NEW)
    tag = update.hmac_sha256(KEY, m)
    store = update.Store(KEY)
    assert store.begin(m, tag) == update.OK
    data = _payload(NEW)
    _send(store, data, end=2496)
    store._close()  # the reset: what was written stays, the store's memory does not
    again = update.Store(KEY)
    assert again.begin(m, tag) == update.OK
    got, total = again.progress()
    # hal.mpy was whole: its blocks count (the one it shares with app.mpy does not); app.mpy is sent again
    assert got == len(NEW["hal.mpy"]) // 64 * 64
    _send(again, data, base=got // 64 * 64)
    assert again.commit() == update.OK
    assert _slot_files("b") == NEW
    # another manifest starts afresh: the inactive slot is emptied first
    _fresh()
    store = update.Store(KEY)
    one = {"hal.mpy": b"h" * 64}
    mm = _manifest(one)
    hal.make_dir("b")
    hal.write_file("b/stale.mpy", b"old")
    assert store.begin(mm, update.hmac_sha256(KEY, mm)) == update.OK
    assert os.listdir("b") == []


def test_no_slots_no_update():
    _fresh()
    _rm("slots.json")
    m = _manifest(NEW)
    assert update.Store(KEY).begin(m, update.hmac_sha256(KEY, m)) == update.E_STATE


def test_an_unconfirmed_build_resets_the_pod_when_its_time_is_up():
    import asyncio
    _fresh()
    m = _manifest(NEW)
    store = update.Store(KEY)
    assert store.begin(m, update.hmac_sha256(KEY, m)) == update.OK
    _send(store, _payload(NEW))
    assert store.commit(confirm_ms=600) == update.OK
    booted = update.Store(KEY)  # the build on trial, after the reset
    said = []
    t0 = hal.ticks_ms()
    try:
        asyncio.run(booted.supervise(lambda: said.append(1)))
        assert False, "supervise returned with a build on trial"
    except SystemExit:  # hal.reset(): the emulator's process ends as the chip resets
        pass
    assert said == [1] and 600 <= hal.ticks_diff(hal.ticks_ms(), t0) < 3000
    # confirmed in time: no reset (supervise runs on until RUNNING_MS, so only its first tick is run here)
    confirmed = update.Store(KEY)
    assert confirmed.confirm() == update.OK and not confirmed.trial
