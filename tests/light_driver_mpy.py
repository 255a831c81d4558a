# Runs under MicroPython: drives the pod's real command path (link decoder ->
# handlers -> renderer -> governor -> LED write) through many command
# sequences per process, on a simulated pod clock that starts just before the
# 2**30 wrap. One JSON line in (a batch), one JSON line out.
#
# in:  {"config": {key: value}, "leds": n, "seqs": [{"events": [[t_ms, kind, data]], "end_ms": ms}]}
#      kinds: "rx" (hex of bytes arriving on the link), "alpha" (0..255 from the EEG side),
#             "stall" (ms the next frame is late)
#      the pod's ticks_us is T0_US + 1000 x ms since the sequence began (wrapping): SCENE_AT
#      instants are given on it, and a waiting one is applied as the render loop does
# out: {"results": [{"answers": [[type, ack_seq, reason]], "frames": hex}]}
#      frames: per frame, u32 little-endian ms since the sequence began + n x (R, G, B) as driven
import binascii
import json
import struct
import sys

import hal
from pod import config, framing, link, render, wire
import peer_wire  # the host's side of the codec (generated)

_T0 = hal.TICKS_PERIOD - 1500  # every sequence crosses the tick wrap
T0_US = hal.TICKS_PERIOD - 1500000  # ... on ticks_us too
_clock = [0]


def _ticks_ms():
    return _clock[0]


hal.ticks_ms = _ticks_ms  # the pod clock is hardware: simulated at the HAL boundary


class Capture:
    def __init__(self, count):
        self.count = count
        self.out = bytearray()
        self.elapsed = 0

    def write(self, rgb):
        self.out.extend(struct.pack("<I", self.elapsed))
        self.out.extend(rgb)


class Writer:  # hal.open_link()'s port, TX side: always room
    def __init__(self):
        self.out = bytearray()

    def tx_free(self):
        return 4096

    def write(self, data, n):
        self.out.extend(data)
        return n


def run_seq(cfg, n, seq):
    leds = Capture(n)
    _clock[0] = _T0
    r = render.Renderer(leds, 60, cfg)
    w = Writer()
    lk = link.Link(w, ("pod-prop", "0", 1, n, 8, 250), r.apply)
    r.watch(lk, cfg.fade_after_ms)
    lk.register(wire.T_NIGHT_MODE, r.night)
    lk.register(wire.T_GROUP_VALUE, r.group, command=False)
    lk.register(wire.T_SCENE_AT, r.scene_at)
    lk.register(wire.T_FRAME_PHASE, r.frame_phase, command=False)
    events = seq["events"]
    k = 0
    elapsed = 0
    step = 0
    late = 0
    r.render(_T0)  # boot frame
    while elapsed <= seq["end_ms"]:
        while k < len(events) and events[k][0] <= elapsed:
            t_ev, kind, data = events[k]
            if kind == "rx":
                b = binascii.unhexlify(data)
                lk._dec.feed(b, len(b))
            elif kind == "alpha":
                r.inputs.alpha = data
            elif kind == "stall":
                late += data
            k += 1
        step += 1
        elapsed += (17 if step % 3 else 16) + late  # 60 fps
        late = 0
        _clock[0] = hal.ticks_add(_T0, elapsed)
        leds.elapsed = elapsed
        if r._at is not None:  # as Renderer.run: a SCENE_AT due at this frame's instant
            r.due_scene(hal.ticks_add(T0_US, elapsed * 1000), _clock[0])
        r.render(_clock[0])
    answers = []

    def on(type_, s, frame, end):
        f = peer_wire.UNPACK[type_](frame, wire.HEADER_SIZE, end)
        answers.append([type_, f[0], f[1] if type_ == wire.T_NACK else 0])

    framing.Decoder(on).feed(w.out, len(w.out))
    return {"answers": answers, "frames": binascii.hexlify(leds.out).decode()}


def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        req = json.loads(line)
        cfg = config.Config()
        for key, value in req["config"].items():
            if not cfg.set(key, value):
                raise ValueError(key)
        out = [run_seq(cfg, req["leds"], s) for s in req["seqs"]]
        sys.stdout.write(json.dumps({"results": out}))
        sys.stdout.write("\n")
        sys.stdout.flush()


main()
