# Link command handling under MicroPython, through fake streams: the same
# Link object the app runs, fed real frames, answers decoded again.
import asyncio

import struct

from pod import framing, link, refusal, wire
import peer_wire  # the host's side of the codec (generated)

HDR = wire.HEADER_SIZE


class FakePort:
    """hal.open_link()'s contract over two buffers: what the host sent, what the pod wrote."""

    def __init__(self):
        self.inbox = bytearray()
        self.out = bytearray()
        self.free = 4096  # tx_free() as the test sets it
        self.flag = asyncio.ThreadSafeFlag()

    def push(self, data):
        self.inbox.extend(data)
        self.flag.set()

    def readinto(self, buf):
        n = min(len(buf), len(self.inbox))
        buf[:n] = self.inbox[:n]
        self.inbox = self.inbox[n:]
        return n

    def wait(self):
        return self.flag.wait()

    def tx_free(self):
        return self.free

    def write(self, buf, n):
        n = min(n, self.free)
        self.out.extend(buf[:n])
        return n


class Host:
    """Builds frames as hostd would and decodes what the pod sent."""

    def __init__(self):
        self.enc = framing.Encoder()
        self.got = []
        self.dec = framing.Decoder(self._on)

    def _on(self, type_, seq, frame, end):
        # bytes fields (a NACK's detail) as bytes: a memoryview into the decoder's buffer compares to nothing
        fields = tuple(bytes(f) if isinstance(f, memoryview) else f for f in peer_wire.UNPACK[type_](frame, HDR, end))
        self.got.append((type_, seq, fields))

    def frame(self, type_, seq, *fields):
        end = peer_wire.PACK[type_](self.enc.body, HDR, *fields)
        return bytes(self.enc.encode(type_, seq, end))

    def raw(self, type_, seq, payload):
        self.enc.body[HDR:HDR + len(payload)] = payload
        return bytes(self.enc.encode(type_, seq, HDR + len(payload)))

    def read(self, writer):
        self.dec.feed(writer.out, len(writer.out))
        writer.out = bytearray()
        got, self.got = self.got, []
        return got


HELLO = ("pod-test", "0.1.0", 0xB007, 12, 8, 250)


def make():
    applied = []

    def sink(scene):  # a SCENE's scene arrives whole, as a wire.Scene
        if scene.effect > 13:
            return wire.NACK_REASON_UNKNOWN_EFFECT
        s = scene
        applied.append((s.effect, s.brightness, tuple(s.color), s.transition_ms, s.period_ms, s.params))
        return 0

    w = FakePort()
    lk = link.Link(w, HELLO, sink)
    return lk, w, Host(), applied


def deliver(lk, data):
    lk._dec.feed(data, len(data))


def test_hello_at_boot_and_on_connect():
    lk, w, host, _ = make()
    lk.send_hello()
    deliver(lk, host.frame(wire.T_CONNECT, 1, wire.PROTOCOL_VERSION, wire.FINGERPRINT, "host-a"))
    got = host.read(w)
    assert [(t, s) for t, s, _ in got] == [(wire.T_HELLO, 0), (wire.T_HELLO, 1)]
    assert got[1][2] == ("pod-test", "0.1.0", wire.PROTOCOL_VERSION, wire.FINGERPRINT, 0, 0xB007, 12, 8, 250,
                         wire.MESSAGE_TABLE)
    # the table names every message the pod knows, once: (type id u8, layout hash u16)
    table = got[1][2][-1]
    assert sorted(table[i] for i in range(0, len(table), 3)) == sorted(peer_wire.NAMES)
    assert lk.host_id == "host-a" and lk.connected


def test_ping_pong_echoes_and_stamps():
    lk, w, host, _ = make()
    deliver(lk, host.frame(wire.T_PING, 7, 0xDEADBEEF, 123456789012))
    (t, s, f), = host.read(w)
    assert t == wire.T_PONG
    assert f[:2] == (0xDEADBEEF, 123456789012)


def test_scene_ack_and_duplicate_not_reapplied():
    lk, w, host, applied = make()
    scene = host.frame(wire.T_SCENE, 40, wire.EFFECT_SOLID, 200, (1, 2, 3), 0, 0, 0, 0, (5, -6))
    deliver(lk, scene)
    deliver(lk, scene)  # host retry: same seq
    got = host.read(w)
    assert [(t, f) for t, s, f in got] == [(wire.T_ACK, (40,)), (wire.T_ACK, (40,))]
    assert applied == [(wire.EFFECT_SOLID, 200, (1, 2, 3), 0, 0, (5, -6))]
    deliver(lk, host.frame(wire.T_SCENE, 41, wire.EFFECT_OFF, 0, (0, 0, 0), 0, 0, 0, 0, ()))
    assert host.read(w)[0][2] == (41,) and len(applied) == 2


def test_scene_nack_unknown_effect_and_its_retry():
    lk, w, host, applied = make()
    bad = host.frame(wire.T_SCENE, 3, 99, 200, (1, 2, 3), 0, 0, 0, 0, ())
    deliver(lk, bad)
    deliver(lk, bad)
    got = host.read(w)
    assert [(t, f) for t, s, f in got] == [(wire.T_NACK, (3, wire.NACK_REASON_UNKNOWN_EFFECT, b""))] * 2
    assert applied == []


def test_unknown_type_is_counted_and_nacked():
    lk, w, host, _ = make()
    deliver(lk, host.raw(0x7E, 12, b"\x01\x02"))
    deliver(lk, host.raw(wire.T_STATUS, 13, b""))  # a type the pod sends, never receives
    got = host.read(w)
    assert [f for t, s, f in got] == [(12, wire.NACK_REASON_UNKNOWN_TYPE, b""), (13, wire.NACK_REASON_UNKNOWN_TYPE, b"")]
    assert lk.unknown_types == 2 and lk.rx_errors == 2


def test_undecodable_payload_is_nacked_bad_message():
    lk, w, host, applied = make()
    deliver(lk, host.raw(wire.T_SCENE, 5, b"\x01\x02"))  # too short for a scene
    got = host.read(w)
    assert got == [(wire.T_NACK, 0, (5, wire.NACK_REASON_BAD_MESSAGE, b""))]
    assert applied == [] and lk.bad_messages == 1


def test_tx_seq_counts_every_frame_and_wraps():
    lk, w, host, _ = make()
    lk._tx_seq = 0xFFFE
    for _ in range(3):
        lk.send_log(wire.LOG_LEVEL_INFO, "x")
    assert [s for t, s, f in host.read(w)] == [0xFFFE, 0xFFFF, 0]
    assert lk.tx_frames == 3


def test_telemetry_dropped_when_backlogged_answers_kept_until_full():
    lk, w, host, _ = make()
    w.free = 2000  # less than two maximal frames left
    end = wire.pack_log(lk.body, HDR, wire.LOG_LEVEL_INFO, "t")
    assert lk.backlogged() and not lk.send_telemetry(wire.T_LOG, end)
    assert lk.tx_dropped == 1 and host.read(w) == []
    assert lk.send(wire.T_LOG, end) and [t for t, s, f in host.read(w)] == [wire.T_LOG]
    w.free = 5  # truly full: even an answer is lost, counted, and uses no sequence number
    assert not lk.send(wire.T_LOG, end) and lk.tx_lost == 1 and host.read(w) == []
    w.free = 4096
    assert lk.send_telemetry(wire.T_LOG, end) and [s for t, s, f in host.read(w)] == [1]


async def test_rx_task_reads_the_stream_in_pieces():
    lk, w, host, applied = make()
    task = asyncio.create_task(lk.rx_task())
    f = host.frame(wire.T_SCENE, 1, wire.EFFECT_SOLID, 9, (9, 9, 9), 0, 0, 0, 0, ())
    w.push(b"\x00garbage\x00" + f[:4])
    await asyncio.sleep_ms(5)
    w.push(f[4:])
    await asyncio.sleep_ms(5)
    task.cancel()
    assert [t for t, s, x in host.read(w)] == [wire.T_ACK]
    assert lk.rx_frames == 1 and lk.rx_errors == 1


def test_registered_command_is_answered_and_its_retry_not_reapplied():
    lk, w, host, _ = make()
    nights = []

    def night(mode, start, end, now):
        nights.append((mode, start, end, now))
        return 0 if start < 1440 else wire.NACK_REASON_BAD_PARAM

    lk.register(wire.T_NIGHT_MODE, night)
    f = host.frame(wire.T_NIGHT_MODE, 9, wire.NIGHT_MODE_SCHEDULE, 1320, 420, 1000)
    deliver(lk, f)
    deliver(lk, f)
    deliver(lk, host.frame(wire.T_NIGHT_MODE, 10, wire.NIGHT_MODE_ON, 5000, 0, 0))
    got = [(t, fl) for t, s, fl in host.read(w)]
    assert got == [(wire.T_ACK, (9,)), (wire.T_ACK, (9,)), (wire.T_NACK, (10, wire.NACK_REASON_BAD_PARAM, b""))]
    assert nights == [(wire.NIGHT_MODE_SCHEDULE, 1320, 420, 1000), (wire.NIGHT_MODE_ON, 5000, 0, 0)]


def test_registered_message_is_not_answered_and_marks_the_link_heard():
    lk, w, host, _ = make()
    values = []
    lk.register(wire.T_GROUP_VALUE, lambda gid, v: values.append((gid, v)), command=False)
    assert not lk.heard
    deliver(lk, host.frame(wire.T_GROUP_VALUE, 1, 7, 40000))
    assert values == [(7, 40000)] and host.read(w) == [] and lk.heard


def _detail(field, item, lo, hi):
    return struct.pack("<BBii", field, item, lo, hi)


def test_nack_names_the_field_and_range_the_sink_named_and_its_retry_too():
    lk, w, host, _ = make()

    def night(mode, start, end, now):
        if start >= 1440:
            return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_NIGHT_MODE_START_MIN, 0, 1439)
        return wire.NACK_REASON_BUSY  # a refusal that names no field

    lk.register(wire.T_NIGHT_MODE, night)
    bad = host.frame(wire.T_NIGHT_MODE, 4, wire.NIGHT_MODE_ON, 5000, 0, 0)
    deliver(lk, bad)
    deliver(lk, host.frame(wire.T_PING, 5, 1, 2))  # another frame between: the retry still gets its detail
    deliver(lk, bad)
    deliver(lk, host.frame(wire.T_NIGHT_MODE, 6, wire.NIGHT_MODE_ON, 10, 0, 0))
    got = [(t, f) for t, s, f in host.read(w) if t != wire.T_PONG]
    named = (wire.T_NACK, (4, wire.NACK_REASON_BAD_PARAM, _detail(wire.F_NIGHT_MODE_START_MIN, 0xFF, 0, 1439)))
    assert got == [named, named, (wire.T_NACK, (6, wire.NACK_REASON_BUSY, b""))], got
    # a negative range survives the i32s: a param of -32768..32767
    refusal.field(0, 7, -32768, 32767, 2)
    assert lk._answer(wire.T_SCENE, 9, wire.NACK_REASON_BAD_PARAM, refusal.DETAIL) is None
    assert host.read(w)[0][2] == (9, wire.NACK_REASON_BAD_PARAM, _detail(7, 2, -32768, 32767))


def test_the_spare_tier_ends_before_telemetrys_reserve():
    lk, w, host, _ = make()
    w.free = 2500  # telemetry still goes (more than its reserve), the preview does not
    assert not lk.backlogged() and not lk.spare()
    w.free = 4096
    assert lk.spare()


def test_connect_calls_the_hook_after_hello():
    lk, w, host, _ = make()
    calls = []
    lk.on_connect = lambda: (calls.append(len(host.read(w))), lk.send_log(wire.LOG_LEVEL_INFO, "after"))
    deliver(lk, host.frame(wire.T_CONNECT, 1, wire.PROTOCOL_VERSION, wire.FINGERPRINT, "h"))
    assert calls == [1]  # HELLO was out before the hook ran
    assert [t for t, s, f in host.read(w)] == [wire.T_LOG]


def test_safe_mode_without_its_confirm_value_names_it():
    from pod import safemode

    cmd = safemode.SafeModeCommand()
    assert cmd.request(0x1234) == wire.NACK_REASON_BAD_PARAM and cmd.task is None
    assert refusal.DETAIL == [wire.F_SAFE_MODE_CONFIRM, wire.NACK_NO_FIELD, wire.SAFE_MODE_CONFIRM,
                              wire.SAFE_MODE_CONFIRM]
