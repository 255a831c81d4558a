# The generated firmware codec against the shared vectors (protocol/vectors.json):
# every vector's payload unpacks and packs back to the same bytes under MicroPython.
# u32 fields the firmware keeps as 30 bits (+ the 2 above) come back as their low
# 30 bits; packed again with the 2 bits above, the bytes are the host's.
import json
import os

from pod import framing, wire
import peer_wire  # the host's side of the codec (generated)

_SPLIT = {"first_seq", "last_seq", "from_seq", "uptime_ms"}  # protocol/gen_firmware.py SPLIT32


def _vectors():
    with open(os.getenv("HYPNOLUM_VECTORS") or "../../protocol/vectors.json") as f:
        return json.load(f)


def _both(a, b):
    d = dict(a)
    d.update(b)
    return d


def _flat(t, fields):
    # the pod's codec passes a record (the scene) whole; the host's side has its fields flat
    if t not in peer_wire.POD_WHOLE:
        return fields
    _cls, names, i = peer_wire.POD_WHOLE[t]
    rec = fields[i]
    return fields[:i] + tuple(getattr(rec, n) for n in names) + fields[i + 1:]


def _whole(t, args):
    if t not in peer_wire.POD_WHOLE:
        return args
    cls, names, i = peer_wire.POD_WHOLE[t]
    return args[:i] + [cls(*args[i:i + len(names)])] + args[i + len(names):]


def test_the_pod_passes_a_scene_whole():
    buf = bytearray(64)
    end = peer_wire.pack_scene_at(buf, 0, 0x40000123, wire.EFFECT_TIDE, 9, (1, 2, 3), 4, 5000, 6, 1, (-7, 8))
    at, s = wire.unpack_scene_at(buf, 0, end)
    assert at == 0x123 and isinstance(s, wire.Scene)
    assert (s.effect, s.brightness, bytes(s.color), s.transition_ms, s.period_ms, s.palette, s.flags, s.params) == (
        wire.EFFECT_TIDE, 9, b"\x01\x02\x03", 4, 5000, 6, 1, (-7, 8))
    mine = wire.Scene()
    mine.assign(s)
    s.color[0] = 99  # a copy: the holder's own colour
    assert mine.color == bytearray((1, 2, 3)) and mine.params == (-7, 8)
    end = wire.pack_scene_shown(buf, 0, wire.SCENE_SOURCE_TIMELINE, 0, mine)
    assert peer_wire.unpack_scene_shown(buf, 0, end) == (wire.SCENE_SOURCE_TIMELINE, 0, wire.EFFECT_TIDE, 9, (1, 2, 3),
                                                         4, 5000, 6, 1, (-7, 8))


def test_the_pod_packs_what_it_sends_and_unpacks_the_rest():
    for t in peer_wire.NAMES:
        if t in peer_wire.POD_READS_RAW:  # the pod reads it in place: the host packs it, the tests unpack it
            assert t not in wire.PACK and t not in wire.UNPACK and t in peer_wire.PACK and t in peer_wire.UNPACK
            continue
        assert (t in wire.PACK) != (t in wire.UNPACK), peer_wire.NAMES[t]
        assert (t in peer_wire.PACK) == (t in wire.UNPACK) and (t in peer_wire.UNPACK) == (t in wire.PACK)


def test_every_vector_unpacks_and_packs_back_to_its_bytes():
    # each direction by the side that packs it and the side that unpacks it
    unpack = _both(wire.UNPACK, peer_wire.UNPACK)
    pack = _both(wire.PACK, peer_wire.PACK)
    buf = bytearray(1100)
    seen = 0
    for v in _vectors()["vectors"]:
        frames = []
        framing.Decoder(lambda t, s, f, e: frames.append((t, bytes(f[:e])))).feed(bytes.fromhex(v["frame"]), len(v["frame"]) // 2)
        t, body = frames[0]
        fields = unpack[t](body, 4, len(body))
        if t in wire.UNPACK:
            fields = _flat(t, fields)
        names = peer_wire.FIELDS[t]
        args = []
        for name, value in zip(names, fields):
            if name in _SPLIT:
                full = v["fields"][name]
                assert value == full & 0x3FFFFFFF, (v["name"], name)
                args += [value, full >> 30]
            elif isinstance(value, memoryview):
                args.append(bytes(value))
            else:
                args.append(value)
        if v["name"] == "scene_at" or v["name"] == "frame_phase":
            k = "at_us" if v["name"] == "scene_at" else "anchor_us"
            assert fields[0] == v["fields"][k] & 0x3FFFFFFF  # ticks: taken modulo the period
            args[0] = v["fields"][k]  # packed (host side only) with all 32 bits
        if t in wire.PACK:
            args = _whole(t, args)
        end = pack[t](buf, 4, *args)
        assert bytes(buf[4:end]) == body[4:], v["name"] + " " + v["case"]
        seen += 1
    assert seen >= 3 * len(peer_wire.NAMES) - 3, seen
