# Runs under MicroPython (driven by bench/fuzz_firmware.py): well-framed frames (valid
# header and CRC) with fuzzed payloads, for every message type the pod's Link handles,
# fed through pod.link.Link into the handlers the app registers (firmware/pod/app.py:
# renderer, night mode, group value, SCENE_AT, FRAME_PHASE, safe mode, EEG replay), with
# frames rendered through the governor in between on a simulated pod clock that crosses
# the 2**30 tick wrap. The clock, the LED strip, the safe-mode flag and reset are the
# HAL boundary and are simulated here; everything else is the firmware.
#
# stdin: one JSON line {"count", "seed", "config": {key: value}, "commands": [type ids]}
# stdout, one line each:
#   h <type> ...                            first: the types the Link has handlers for
#   m <type> <seq> <payload hex> <retry> <answer>
#                                            per message; retry 1: the seq of the
#                                            last message of this type again; answer: ack, nack:<reason>,
#                                            hello, pong, none, or what else came, comma-joined
#   f <ms> <rgb hex>                         per rendered frame, as driven (always)
#   v <text>                                 a broken rule (answers, strobe)
#   c <type> <seq> <payload hex>             an exception out of the link or the render loop,
#   | <traceback line>                       followed by its traceback
#   done <json counters>
import io
from binascii import hexlify
import json
import sys

import hal
from pod import config, framing, link, render, ring, safemode, slots, transfer, wire
import peer_wire  # the host's side of the codec (generated, tests/firmware)

_HDR = wire.HEADER_SIZE
_MAX_PAYLOAD = wire.MAX_FRAME - _HDR - wire.CRC_SIZE
_MASK30 = 0x3FFFFFFF
_T0_MS = hal.TICKS_PERIOD - 1500  # the pod clock wraps 1.5 s into the run
_T0_US = hal.TICKS_PERIOD - 1500000
_clock = [_T0_MS, _T0_US]
_safe = [0, 0]  # safe-mode requests, resets


def _ticks_ms():
    return _clock[0]


def _ticks_us():
    return _clock[1]


def _request_safe_mode():
    _safe[0] += 1


def _reset():
    _safe[1] += 1


# the HAL boundary: a simulated clock, and nothing really resets
hal.ticks_ms = _ticks_ms
hal.ticks_us = _ticks_us
hal.request_safe_mode = _request_safe_mode
hal.reset = _reset


class Rng:
    # xorshift32: deterministic, no allocation beyond small ints
    def __init__(self, seed):
        self.s = (seed * 2654435761) & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n

    def pick(self, items):
        return items[self.below(len(items))]

    def u16(self):
        return self.next() & 0xFFFF

    def u32(self):
        return self.next()


class Port:
    """hal.open_link()'s port, TX side: always room; what the pod wrote is kept."""

    def __init__(self):
        self.out = bytearray()

    def tx_free(self):
        return 4096

    def write(self, data, n):
        self.out.extend(data[:n])
        return n


class Leds:
    def __init__(self, count):
        self.count = count
        self.last = bytes(3 * count)

    def write(self, rgb):
        self.last = bytes(rgb)


class Pod:
    """The app's wiring (app.Pod.run) around one Link, without its tasks."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.leds = Leds(cfg.led_count)
        self.renderer = r = render.Renderer(self.leds, 60, cfg)
        self.port = Port()
        self.link = lk = link.Link(self.port, ("pod-fuzz", config.FW_VERSION, 1, cfg.led_count, 8, 250), r.apply)
        r.watch(lk, cfg.fade_after_ms)
        lk.register(wire.T_NIGHT_MODE, r.night)
        lk.register(wire.T_GROUP_VALUE, r.group, command=False)
        lk.register(wire.T_SCENE_AT, r.scene_at)
        lk.register(wire.T_FRAME_PHASE, r.frame_phase, command=False)
        self.safe_mode = safemode.SafeModeCommand()
        lk.register(wire.T_SAFE_MODE, self.safe_mode.request)
        self.ring = ring.SampleRing(8, 250)
        self.replayer = ring.Replayer(lk, self.ring)
        lk.register(wire.T_EEG_REPLAY, self.replayer.request)
        # updates: no slots here (no slots.json in the working directory), so every update is refused
        self.transfer = transfer.Transfer(lk, slots.Slots())
        self.seq = 0  # next EEG sample number
        self.samples = bytearray(4 * self.ring.sample_bytes)
        r.render(_clock[0])  # dark at once, as at boot


# -- payloads ------------------------------------------------------------------------
_PERIODS = (0, 50, 76, 77, 100, 125, 126, 500, 1000, 4000, 65535)


def _scene(rng):
    n = 0 if rng.below(2) else rng.below(9)
    params = tuple(rng.below(706) - 5 if rng.below(4) else rng.u16() - 32768 for _ in range(n))
    color = (rng.below(256), rng.below(256), rng.below(256))
    return (rng.below(16), rng.below(256), color, rng.pick((0, 0, 100, 3000)) if rng.below(2) else rng.u16(),
            rng.pick(_PERIODS) if rng.below(2) else rng.u16(), rng.below(9), rng.below(4), params)


def _text(rng):
    n = rng.pick((0, 1, 8, 40, 255)) if rng.below(4) == 0 else rng.below(24)
    return bytes(rng.below(256) if rng.below(8) == 0 else 97 + rng.below(26) for _ in range(n))


def fields(rng, t, pod):
    """Valid fields of message type t (values in and out of the pod's ranges)."""
    now_us = _clock[1]
    if t == wire.T_CONNECT:
        return (wire.PROTOCOL_VERSION if rng.below(3) else rng.below(256),
                wire.FINGERPRINT if rng.below(3) else rng.u32(), _text(rng))
    if t == wire.T_PING:
        return (rng.u32(), rng.u32() * 4294967296 + rng.u32())
    if t == wire.T_SCENE:
        return _scene(rng)
    if t == wire.T_EEG_REPLAY:
        near = (pod.ring.newest - rng.below(1500)) & _MASK30
        return (near if rng.below(4) else rng.u32() & _MASK30, rng.below(4),
                rng.pick((0, 1, 40, 500, 1024, 1025, 65535)) if rng.below(3) == 0 else rng.below(1200))
    if t == wire.T_NIGHT_MODE:
        return (rng.below(4), rng.below(1500), rng.below(1500), rng.below(1500) if rng.below(4) else rng.u16())
    if t == wire.T_GROUP_VALUE:
        return (rng.u16(), rng.u16())
    if t == wire.T_SCENE_AT:
        ahead = (rng.below(6000) - 3000) * 1000 + rng.below(4) * (1 << 30)
        at = (now_us + ahead) & 0xFFFFFFFF if rng.below(4) else rng.u32()
        return (at,) + _scene(rng)
    if t == wire.T_FRAME_PHASE:
        period = rng.pick((0, 3999, 4000, 16666, 16667, 1000000, 1000001)) if rng.below(2) else rng.u32()
        return ((now_us + rng.below(100000)) & 0xFFFFFFFF if rng.below(2) else rng.u32(), period)
    if t == wire.T_SAFE_MODE:
        return (wire.SAFE_MODE_CONFIRM if rng.below(4) == 0 else rng.u16(),)
    return None


def _valid(rng, t, pod, buf):
    """A valid payload of type t packed at buf[_HDR:]; returns its end."""
    f = fields(rng, t, pod)
    if f is None:  # a type the pod does not handle: any bytes
        return _HDR + rng.below(40)
    if t == wire.T_EEG_REPLAY:
        return peer_wire.pack_eeg_replay(buf, _HDR, f[0], f[1], f[2])
    return peer_wire.PACK[t](buf, _HDR, *f)


def _mutate(rng, buf, end):
    """1..4 byte mutations of buf[_HDR:end]: flip, set, insert, delete, truncate, extend."""
    for _ in range(1 + rng.below(4)):
        n = end - _HDR
        pos = _HDR + (rng.below(n) if n else 0)
        op = rng.below(6)
        if op == 0 and n:
            buf[pos] ^= 1 << rng.below(8)
        elif op == 1 and n:
            buf[pos] = rng.pick((0, 1, 8, 9, 0x7F, 0x80, 0xFF)) if rng.below(2) else rng.below(256)
        elif op == 2 and end < wire.MAX_FRAME - wire.CRC_SIZE - 8:
            k = 1 + rng.below(8)
            buf[pos + k:end + k] = buf[pos:end]
            for j in range(k):
                buf[pos + j] = rng.below(256)
            end += k
        elif op == 3 and n:
            k = min(1 + rng.below(8), end - pos)
            buf[pos:end - k] = buf[pos + k:end]
            end -= k
        elif op == 4 and n:
            end = pos
        elif op == 5:
            k = min(1 + rng.below(16), _MAX_PAYLOAD - n)
            for j in range(k):
                buf[end + j] = rng.below(256)
            end += k
    return end


def payload(rng, t, pod, buf):
    """Payload of type t at buf[_HDR:end]: valid, mutated, or random bytes; returns end."""
    kind = rng.below(8)
    if kind < 3:
        return _valid(rng, t, pod, buf)
    if kind < 7:
        return _mutate(rng, buf, _valid(rng, t, pod, buf))
    n = rng.pick((0, _MAX_PAYLOAD, rng.below(_MAX_PAYLOAD + 1))) if rng.below(4) == 0 else rng.below(40)
    for j in range(n):
        buf[_HDR + j] = rng.below(256)
    return _HDR + n


# -- answers ----------------------------------------------------------------------------
_NAMES = {wire.T_ACK: "ack", wire.T_HELLO: "hello", wire.T_PONG: "pong", wire.T_EEG_BATCH: "eeg_batch",
          wire.T_LOG: "log"}


def answers(port):
    """The frames the pod wrote since the last call, as [(type, fields)]."""
    got = []

    def on(type_, seq, frame, end):
        f = peer_wire.UNPACK[type_](frame, _HDR, end)
        if type_ == wire.T_SCENE_SHOWN:
            return  # the pod reports what it shows when that changes: not an answer
        if type_ == wire.T_NACK:
            if len(f[2]) not in (0, wire.NACK_DETAIL_SIZE):
                raise ValueError("NACK detail of %d bytes" % len(f[2]))
            f = f[:2]
        got.append((type_, f))

    framing.Decoder(on).feed(port.out, len(port.out))
    port.out = bytearray()
    return got


def answer_text(got):
    if not got:
        return "none"
    return ",".join("nack:%d" % f[1] if t == wire.T_NACK else _NAMES.get(t, "type%d" % t) for t, f in got)


def check(t, seq, data, got, handlers, commands, strobe_ok, retry):
    """The rules every answer keeps; a list of what is broken. A command's retry is answered
    as the first time and its payload is not read."""
    bad = []
    acks = [(a, f) for a, f in got if a in (wire.T_ACK, wire.T_NACK)]
    if t not in handlers:
        if got != [(wire.T_NACK, (seq, wire.NACK_REASON_UNKNOWN_TYPE))]:
            bad.append("unhandled type answered %s, not NACK unknown_type" % answer_text(got))
        return bad
    if acks and (len(acks) > 1 or acks[0][1][0] != seq):
        bad.append("answered %s for seq %d" % (answer_text(got), seq))
    nacked_bad = acks and acks[0][0] == wire.T_NACK and acks[0][1][1] == wire.NACK_REASON_BAD_MESSAGE
    if t in commands:
        if len(acks) != 1:
            bad.append("command answered %s, not once ACK or NACK" % answer_text(got))
    elif t == wire.T_CONNECT:
        if not nacked_bad and [a for a, _ in got] != [wire.T_HELLO]:
            bad.append("CONNECT answered %s, not HELLO or NACK bad_message" % answer_text(got))
    elif t == wire.T_PING:
        if not nacked_bad and [a for a, _ in got] != [wire.T_PONG]:
            bad.append("PING answered %s, not PONG or NACK bad_message" % answer_text(got))
    elif got and not nacked_bad:
        bad.append("message answered %s, not nothing or NACK bad_message" % answer_text(got))
    if acks and acks[0][0] == wire.T_ACK and not strobe_ok and not (retry and t in commands):
        effect = data[0] if t == wire.T_SCENE else (data[4] if t == wire.T_SCENE_AT else -1)
        if effect == wire.EFFECT_STROBE:
            bad.append("strobe scene accepted on a pod without strobe_enabled")
    return bad


# -- the run -----------------------------------------------------------------------------
def advance(ms, us_extra=0):
    _clock[0] = hal.ticks_add(_clock[0], ms)
    _clock[1] = hal.ticks_add(_clock[1], ms * 1000 + us_extra)


def frame_out(pod, elapsed):
    """One frame as Renderer.run computes it (a waiting SCENE_AT applied at its instant)."""
    r = pod.renderer
    if r._at is not None:
        r.due_scene(_clock[1], _clock[0])
    r.render(_clock[0])
    sys.stdout.write("f %d %s\n" % (elapsed, hexlify(pod.leds.last).decode()))


def headset(pod):
    """The samples of one frame's time into the ring (what the replays draw on)."""
    n = 4
    s = pod.samples
    for i in range(len(s)):
        s[i] = (pod.seq + i) & 0xFF
    pod.ring.put(pod.seq & _MASK30, _clock[0], s, n * pod.ring.sample_bytes, (pod.seq >> 30) & 3)
    pod.seq += n


def replay(pod):
    """What Replayer.run sends for an accepted EEG_REPLAY; every frame must be a replay batch."""
    bad = []
    rp = pod.replayer
    for _ in range(64):
        if not rp._left:
            break
        rp._send_frame()
    rp._left = 0
    for t, f in answers(pod.port):
        if t != wire.T_EEG_BATCH or not f[3] & wire.EEG_FLAG_REPLAY:
            bad.append("replay sent type %d %r" % (t, f))
    return bad


def report_crash(stats, where, t, seq, data, exc):
    stats["crashes"] += 1
    if stats["crashes"] > 20:
        return
    text = io.StringIO()
    sys.print_exception(exc, text)
    sys.stdout.write("c %s %d %d %s\n" % (where, t, seq, hexlify(data).decode()))
    for line in text.getvalue().splitlines():
        sys.stdout.write("| %s\n" % line)


def main():
    req = json.loads(sys.stdin.readline())
    cfg = config.Config()
    for key, value in req["config"].items():
        if not cfg.set(key, value):
            raise ValueError(key)
    strobe_ok = cfg.strobe_enabled
    commands = set(req["commands"])
    rng = Rng(req["seed"])
    pod = Pod(cfg)
    handlers = sorted(pod.link._handlers)
    others = [t for t in range(256) if t not in handlers]
    stats = {"messages": 0, "crashes": 0, "violations": 0, "frames": 0, "replays": 0, "per_type": {},
             "answers": {}, "handlers": handlers, "safe_mode_requests": 0}
    sys.stdout.write("h %s\n" % " ".join(str(t) for t in handlers))
    enc = framing.Encoder()
    buf = enc.body
    elapsed = 0
    last = (0, 0)
    for i in range(req["count"]):
        t = rng.pick(handlers) if rng.below(16) else rng.pick(others)
        retry = rng.below(10) == 0 and last[0] == t  # a host retry: the same seq again
        seq = last[1] if retry else rng.u16()
        end = payload(rng, t, pod, buf)
        data = bytes(buf[_HDR:end])
        frame = enc.encode(t, seq, end)
        try:
            pod.link._dec.feed(frame, len(frame))
        except Exception as e:  # the pod's rx task would die of it
            report_crash(stats, "link", t, seq, data, e)
            pod = Pod(cfg)
            continue
        last = (t, seq)
        got = answers(pod.port)
        text = answer_text(got)
        key = "%d %s" % (t, text) if t in handlers else "unhandled " + text
        stats["answers"][key] = stats["answers"].get(key, 0) + 1
        name = str(t) if t in handlers else "unhandled"
        stats["per_type"][name] = stats["per_type"].get(name, 0) + 1
        stats["messages"] += 1
        bad = check(t, seq, data, got, handlers, commands, strobe_ok, retry)
        if t == wire.T_EEG_REPLAY and text == "ack":
            stats["replays"] += 1
            bad += replay(pod)
        for b in bad:
            stats["violations"] += 1
            sys.stdout.write("v type %d seq %d payload %s: %s\n" % (t, seq, hexlify(data).decode(), b))
        sys.stdout.write("m %d %d %s %d %s\n" % (t, seq, hexlify(data).decode(), retry, text))
        if rng.below(3) == 0:
            continue  # several messages in one frame's time
        step = 16 + rng.below(2)
        if rng.below(200) == 0:
            step += rng.pick((150, 2500))  # a late frame, or a silence long enough to fade to safe
        try:
            advance(step, rng.below(200) - 100)
            elapsed += step
            headset(pod)
            frame_out(pod, elapsed)
            stats["frames"] += 1
        except Exception as e:  # the render loop would die of it
            report_crash(stats, "render", t, seq, data, e)
            pod = Pod(cfg)
    stats["safe_mode_requests"] = _safe[0]
    sys.stdout.write("done %s\n" % json.dumps(stats))


main()
