# An update over the link (pod/transfer.py) on the real interpreter: frames as hostd sends them,
# through the same Link the app runs, into the real store over the emulator's files.
import binascii
import json
import os

import hal
from pod import build, link, slots, transfer, update, wire
from test_link import FakePort, Host, HELLO, deliver
from test_update import KEY, NEW, OLD, _fresh, _manifest, _payload, _slot_files

import peer_wire  # the host's side of the codec (used by Host), and the update states and reasons

CHUNK = wire.UPDATE_CHUNK


def _pod():
    port = FakePort()
    port.free = 1 << 20
    lk = link.Link(port, HELLO, lambda *scene: 0)
    sl = slots.Slots()
    return lk, port, Host(), sl, transfer.Transfer(lk, sl)


class Peer:
    """hostd's side: numbered frames, and what came back."""

    def __init__(self, lk, port, host):
        self.lk, self.port, self.host, self.seq = lk, port, host, 100

    def send(self, type_, *fields):
        self.seq += 1
        deliver(self.lk, self.host.frame(type_, self.seq, *fields))
        return self.host.read(self.port)

    def chunk(self, part, offset, data, crc=None):
        return self.send(wire.T_UPDATE_DATA, part, offset, binascii.crc32(data) if crc is None else crc, data)


def _status(got):
    st = [f for t, s, f in got if t == wire.T_UPDATE_STATUS]
    return st[-1] if st else None  # (transfer, state, reason, received, total, next)


def _answer(got):
    return [(t, f[1] if t == wire.T_NACK else 0) for t, s, f in got if t in (wire.T_ACK, wire.T_NACK)]


def _send_part(peer, part, data, skip=()):
    got = []
    for off in range(0, len(data), CHUNK):
        if off not in skip:
            got += peer.chunk(part, off, data[off:off + CHUNK])
    return got


def test_update_over_the_link_with_losses_resume_commit_and_confirm():
    _fresh()
    new = dict(NEW)
    new["pod/big.mpy"] = bytes(i * 7 & 0xFF for i in range(5000))
    m = _manifest(new)
    p = _payload(new)
    tag = update.hmac_sha256(KEY, m)
    lk, port, host, sl, t = _pod()
    peer = Peer(lk, port, host)
    got = peer.send(wire.T_UPDATE_BEGIN, 7, len(m), len(p), tag)
    assert _answer(got) == [(wire.T_ACK, 0)]
    assert _status(got) == (7, peer_wire.UPDATE_STATE_MANIFEST, 0, 0, len(m), 0)
    got = peer.chunk(wire.UPDATE_PART_PAYLOAD, 0, p[:CHUNK])  # payload before the manifest: dropped
    assert t.stray == 1 and not got
    got = _send_part(peer, wire.UPDATE_PART_MANIFEST, m)
    assert _status(got)[:2] == (7, peer_wire.UPDATE_STATE_DATA) and _status(got)[4:] == (len(p), 0)
    # the payload: one chunk with a bad CRC, one lost; then the link drops half way
    half = (len(p) // CHUNK // 2) * CHUNK
    got = peer.chunk(wire.UPDATE_PART_PAYLOAD, 0, p[:CHUNK], crc=binascii.crc32(p[:CHUNK]) ^ 1)
    assert _status(got)[2] == peer_wire.UPDATE_REASON_CRC and _status(got)[5] == 0
    got = _send_part(peer, wire.UPDATE_PART_PAYLOAD, p[:half], skip=(CHUNK,))
    got = peer.send(wire.T_UPDATE_COMMIT, 7, 0)  # too early: refused, nothing switched
    assert _answer(got) == [(wire.T_NACK, wire.NACK_REASON_BAD_PARAM)]
    assert _status(got)[2] == peer_wire.UPDATE_REASON_INCOMPLETE
    # the host asks again (the same transfer): the pod says what it holds; nothing starts over
    got = peer.send(wire.T_UPDATE_BEGIN, 7, len(m), len(p), tag)
    st = _status(got)
    assert _answer(got) == [(wire.T_ACK, 0)] and st[1] == peer_wire.UPDATE_STATE_DATA
    assert st[5] == CHUNK and st[3] == half - CHUNK, st
    got = peer.chunk(wire.UPDATE_PART_PAYLOAD, CHUNK, p[CHUNK:2 * CHUNK])
    got = []
    for off in range(half, len(p), CHUNK):
        got += peer.chunk(wire.UPDATE_PART_PAYLOAD, off, p[off:off + CHUNK])
    assert _status(got)[3:] == (len(p), len(p), len(p))
    got = peer.send(wire.T_UPDATE_COMMIT, 7, 45000)
    assert _answer(got) == [(wire.T_ACK, 0)]
    assert _status(got)[:2] == (7, peer_wire.UPDATE_STATE_COMMITTED)
    st = json.loads(open("slots.json").read())
    assert (st["active"], st["trial"], st["wait"]) == ("b", 1, 45000)
    assert _slot_files("b") == new and _slot_files("a") == OLD
    # the next boot: the new build on trial; the host confirms what its HELLO named
    sl2 = slots.Slots()
    lk2 = link.Link(port, HELLO, lambda *scene: 0)
    transfer.Transfer(lk2, sl2)
    peer2 = Peer(lk2, port, host)
    build._hash = None
    got = peer2.send(wire.T_UPDATE_CONFIRM, (build.build_hash() + 1) & 0xFFFFFFFF)
    assert _answer(got) == [(wire.T_NACK, wire.NACK_REASON_BAD_PARAM)] and sl2.trial
    got = peer2.send(wire.T_UPDATE_CONFIRM, build.build_hash())
    assert _answer(got) == [(wire.T_ACK, 0)] and _status(got)[1] == peer_wire.UPDATE_STATE_CONFIRMED
    assert json.loads(open("slots.json").read())["trial"] == 0
    got = peer2.send(wire.T_UPDATE_CONFIRM, build.build_hash())  # again: still fine
    assert _answer(got) == [(wire.T_ACK, 0)]


def test_a_tampered_manifest_is_refused_and_nothing_changes():
    _fresh()
    m = bytearray(_manifest(NEW))
    p = _payload(NEW)
    tag = update.hmac_sha256(KEY, bytes(m))
    m[7] ^= 1  # the build hash, after the tag was made
    lk, port, host, sl, t = _pod()
    peer = Peer(lk, port, host)
    before = open("slots.json").read()
    assert _answer(peer.send(wire.T_UPDATE_BEGIN, 1, len(m), len(p), tag)) == [(wire.T_ACK, 0)]
    got = _send_part(peer, wire.UPDATE_PART_MANIFEST, bytes(m))
    assert _status(got)[1:3] == (peer_wire.UPDATE_STATE_REFUSED, peer_wire.UPDATE_REASON_AUTH)
    assert [f[1] for tt, s, f in got if tt == wire.T_LOG] == ["update: manifest refused (1)"]
    got = peer.chunk(wire.UPDATE_PART_PAYLOAD, 0, p[:CHUNK])
    assert t.stray == 1
    got = peer.send(wire.T_UPDATE_COMMIT, 1, 0)
    assert _answer(got) == [(wire.T_NACK, wire.NACK_REASON_BUSY)]
    assert open("slots.json").read() == before and _slot_files("a") == OLD
    assert "b" not in os.listdir()
    # a tag of the wrong size, a manifest too long: refused at UPDATE_BEGIN
    got = peer.send(wire.T_UPDATE_BEGIN, 2, len(m), len(p), tag[:31])
    assert _answer(got) == [(wire.T_NACK, wire.NACK_REASON_BAD_PARAM)] and _status(got)[2] == peer_wire.UPDATE_REASON_AUTH
    got = peer.send(wire.T_UPDATE_BEGIN, 2, 9000, len(p), tag)
    assert _status(got)[2] == peer_wire.UPDATE_REASON_MANIFEST


def test_no_slots_no_update_and_the_store_is_not_imported():
    for name in ("slots.json",):
        try:
            os.remove(name)
        except OSError:
            pass
    lk, port, host, sl, t = _pod()
    calls = []
    sl.store = lambda: calls.append(1)  # the store is not even asked for
    got = Peer(lk, port, host).send(wire.T_UPDATE_BEGIN, 1, 100, 100, bytes(32))
    assert _answer(got) == [(wire.T_NACK, wire.NACK_REASON_BUSY)]
    assert _status(got)[1:3] == (peer_wire.UPDATE_STATE_IDLE, peer_wire.UPDATE_REASON_STATE)
    assert calls == []
