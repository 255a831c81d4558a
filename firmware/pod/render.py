"""Render loop: scene -> effects engine -> safety governor -> LEDs, at a fixed rate.

Frames are scheduled on hal.ticks_us with ticks_add/ticks_diff (the clock
wraps at 2**30), never by sleeping a fixed time, so the rate does not drift
with the time a frame takes.

A scene change cross-fades: the old effect keeps rendering into a second
buffer and the two are blended over transition_ms. Everything then passes the
governor (pod/governor.py), which no scene can bypass.

Fade to safe: once the link has been heard, a silence of fade_after_ms turns
the pod to a dim warm glow (an "off" scene stays dark). At boot the pod is
dark until a scene arrives. The loop is also the pod's heartbeat for the
watchdog: it feeds it, and only it does.

Stop (FADE_SAFE, a participant's stop): the same glow, reached within 2 s by
the governor's fast fade (pod/governor.py), and held: SCENE_AT scenes are
acknowledged but not shown (a waiting one is dropped) until a SCENE arrives.

Scene report: whenever what the pod shows changes (a SCENE, a SCENE_AT that
came due, the fade to safe, a stop, night limits starting or ending) and in
answer to CONNECT, the pod sends SCENE_SHOWN: the scene, who chose it (set,
timeline, pod) and the safety state. A pod still dark since boot reports
nothing: it shows no scene.

Every frame is computed a lead (3 ms, more after late frames, up to most of
a period, shrinking again while frames are on time) before its scheduled
instant, so it shows the newest inputs (the wearer's alpha, the group value),
and handed to hal's Leds.show_at, which returns at once and starts the LED
data at that instant from a timer of its own: the instant a frame lights
depends neither on how long the effect took nor on when the asyncio loop
comes back to this task. A frame the loop wakes for too late is skipped, not
drawn in a burst, and the schedule keeps its grid.

Garbage collection runs here, every _GC_EVERY_MS, just after a frame's instant
(its data is on the wire): the longest quiet moment the pod has, so a pause
never holds a frame's start. The heap's own allocation threshold is off
(pod/app.py): it counts every call frame the VM takes from the heap and frees
on return (py/objfun.c:273-274 and :342-344; counted at py/gc.c:967, checked at :875), so it
tracks the call rate, not garbage; at 16 KB it collected about 20 times a
second at instants nobody chose.

Shared timeline (circles): FRAME_PHASE puts the schedule on the host's grid
(anchor + k x period, pod ticks_us): pods of a circle then show frame k
together. SCENE_AT holds a scene until the first frame scheduled at or after
its instant (within half a frame: a grid instant estimated a few us late on
one pod must not slip that pod a whole frame), and counts the effect's
animation time from that instant, so every pod shows the same phase.
"""
import asyncio
import gc

import hal
import micropython
from micropython import const

from pod import config, effects, governor, refusal, wire

_FEED_EVERY_MS = const(250)  # watchdog feeds: often enough, not a datagram per frame
_GC_EVERY_MS = const(400)  # 2.5 a second: ~40 ms/s on the S3, ~3 KB of garbage more at the heap's low (bench/)
_GC_AFTER_US = const(500)  # ... this long after a frame's instant: the LED timer has handed it over
_REBASE_MS = const(1 << 20)  # keep scene time far from the ticks_diff range limit (2**29)
_SAFE_BRIGHTNESS = const(28)
_SAFE_TRANSITION_MS = const(4000)
# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
# end of wire layout
_DAY_MIN = const(1440)
_LEAD_MIN_US = const(3000)  # a frame is computed at least this long before its instant
_LEAD_STEP_US = const(1000)  # more lead after a late frame; a quarter of it back after
_LEAD_RELAX_FRAMES = const(30)  # ... this many frames on time (half a second at 60 fps)
_LEAD_GAP_US = const(1000)  # the lead stays this much under a period
_LATE_US = const(100)  # a frame handed to the LEDs later than this after its instant is late
_PAST_MAX_US = const(1 << 28)  # a SCENE_AT instant further back than this is not believed
_MIN_PERIOD_US = const(4000)  # FRAME_PHASE periods accepted: 4 ms .. 1 s
_MAX_PERIOD_US = const(1000000)
_TICKS_MASK = const(0x3FFFFFFF)  # hal.TICKS_PERIOD - 1: host instants are u32, pod ticks wrap at 2**30
SAFE_COLOR = (255, 120, 36)  # a warm glow, ~2200 K

if hal.TICKS_PERIOD - 1 != _TICKS_MASK:
    raise ImportError("render: tick mask does not match hal.TICKS_PERIOD")


@micropython.viper
def _blend(dst, src, n: int, w: int):
    # dst = src + (dst - src) x w / 256: w = 0 shows src (the old scene), 256 dst
    d = ptr8(dst)
    s = ptr8(src)
    i = 0
    while i < n:
        a = int(s[i])
        d[i] = a + ((int(d[i]) - a) * w >> 8)
        i += 1


class Renderer:
    def __init__(self, leds, fps, cfg=None):
        self.leds = leds
        self.cfg = cfg if cfg is not None else config.Config()
        n = self.count = leds.count
        self.period_us = 1000000 // fps
        self.frame = bytearray(n * 3)  # R, G, B per LED (sRGB); the driver reorders
        self._old_frame = bytearray(n * 3)
        self.inputs = effects.Inputs()
        self.scene = wire.Scene()  # the scene shown: what the host asked for, checked; updated in place
        self.governor = governor.Governor(n, self.cfg)
        self._fx = effects.REGISTRY[wire.EFFECT_OFF].cls(n, self.inputs)
        self._fx.start(self.scene)
        self._old = None  # the effect being faded out
        self._old_bri = 0
        self._start_ms = hal.ticks_ms()
        self._old_start_ms = self._start_ms
        self._last_ms = self._start_ms
        self._strobe = False
        self._link = None
        self._fade_after_ms = 0
        self.safe = False  # showing the fade-to-safe glow (link silence)
        self.stopped = False  # FADE_SAFE: the glow, held until a SCENE
        self.source = wire.SCENE_SOURCE_POD  # who chose the scene shown (SCENE_SHOWN.source)
        self._shown_any = False  # a scene has been shown since boot (else nothing to report)
        self._night_shown = False  # night limits held at the last frame
        self.held_back = 0  # SCENE_AT commands not shown because the pod is stopped
        self.reports = 0  # SCENE_SHOWN frames sent
        self.frames_rendered = 0
        self.render_overruns = 0  # frames skipped: the loop woke after their instant
        self.collections = 0  # garbage collections the loop ran
        self.late_frames = 0  # frames handed to the LEDs more than _LATE_US after their instant
        self.lead_us = _LEAD_MIN_US
        self.refused_safety = 0
        self._at = None  # a SCENE_AT's scene (wire.Scene) waiting for its instant
        self._at_us = 0
        self._phase_new = False  # a FRAME_PHASE anchor to take at the next frame
        self._phase_us = 0
        self.scheduled_applied = 0
        self.phase_updates = 0

    # -- commands --------------------------------------------------------
    def watch(self, link, fade_after_ms):
        """Serve the pod link (pod/link.py): fade to safe when it is silent for fade_after_ms,
        take its FADE_SAFE commands, and report the scene shown on it (SCENE_SHOWN)."""
        self._link = link
        self._fade_after_ms = fade_after_ms
        link.register(wire.T_FADE_SAFE, self.fade_safe)
        link.on_connect = self.report

    def _refuse(self, scene, base=0):
        """0 if the scene may be shown, else the wire.NACK_REASON_* refusing it (the field named
        for the NACK; base: where the scene's fields start in the command, see effects.check)."""
        reason = effects.check(scene, base)
        if reason:
            return reason
        if effects.REGISTRY[scene.effect].strobe and not (self.cfg.strobe_enabled
                                                          and scene.flags & wire.SCENE_FLAG_STROBE_OPT_IN):
            self.refused_safety += 1
            return wire.NACK_REASON_SAFETY
        return 0

    def apply(self, scene):
        """SCENE command: switch to scene (a wire.Scene, copied); returns 0, or the
        wire.NACK_REASON_* refusing it (scene unchanged)."""
        reason = self._refuse(scene)
        if reason:
            return reason
        self._set(scene)
        self.safe = False
        self.stopped = False
        self.source = wire.SCENE_SOURCE_SET
        self.report()
        return 0

    def scene_at(self, at_us, scene):
        """SCENE_AT command: check scene (a wire.Scene, kept until then: the caller's to give
        away, as unpack_scene_at's is) now, apply it at pod instant at_us (see the module doc).
        While stopped it is acknowledged and not shown."""
        reason = self._refuse(scene, wire.F_SCENE_AT_EFFECT - wire.F_SCENE_EFFECT)
        if reason:
            return reason
        if self.stopped:
            self.held_back += 1
            return 0
        self._at = scene
        self._at_us = at_us & _TICKS_MASK  # ticks_diff needs a value inside the tick period
        return 0

    def frame_phase(self, anchor_us, period_us):
        """FRAME_PHASE message: show frames at anchor_us + k x period (pod ticks_us)."""
        if _MIN_PERIOD_US <= period_us <= _MAX_PERIOD_US:
            self.period_us = period_us
        self._phase_us = anchor_us & _TICKS_MASK  # ticks_add/ticks_diff need it inside the period
        self._phase_new = True
        self.phase_updates += 1

    def due_scene(self, frame_us, frame_ms):
        """Apply a waiting SCENE_AT if the frame scheduled at frame_us (pod ticks_us,
        frame_ms the same instant on ticks_ms) is at or after its instant."""
        at = self._at
        if at is None:
            return False
        late_us = hal.ticks_diff(frame_us, self._at_us)
        if late_us < -(self.period_us >> 1):
            return False
        self._at = None
        self._set(at)
        self.safe = False
        self.source = wire.SCENE_SOURCE_TIMELINE
        self.report()
        if late_us > _PAST_MAX_US:
            late_us = 0
        # the animation started at the instant, not at this frame
        self._start_ms = hal.ticks_add(frame_ms, -(late_us // 1000))
        self.scheduled_applied += 1
        return True

    def _set(self, scene):
        # show scene (checked): its fields copied into the scene shown
        s = self.scene
        spec = effects.REGISTRY[scene.effect]
        same = scene.effect == s.effect and scene.transition_ms == 0
        old_bri = s.brightness
        s.assign(scene)
        self._shown_any = True
        now = hal.ticks_ms()
        if same:
            self._fx.apply(s)  # new parameters, same phase
        else:
            if s.transition_ms:
                self._old = self._fx
                self._old_start_ms = self._start_ms
                self._old_bri = old_bri
            else:
                self._old = None
                self._fx.stop()
            fx = spec.cls(self.count, self.inputs)
            fx.start(s)
            self._fx = fx
            self._start_ms = now
        self._strobe = spec.strobe

    def night(self, mode, start_min, end_min, now_min):
        """NIGHT_MODE command: 0 or wire.NACK_REASON_BAD_PARAM naming the field."""
        bad = wire.NACK_REASON_BAD_PARAM
        if mode > wire.NIGHT_MODE_SCHEDULE:
            return refusal.field(bad, wire.F_NIGHT_MODE_MODE, 0, wire.NIGHT_MODE_SCHEDULE)
        if start_min >= _DAY_MIN:
            return refusal.field(bad, wire.F_NIGHT_MODE_START_MIN, 0, _DAY_MIN - 1)
        if end_min >= _DAY_MIN:
            return refusal.field(bad, wire.F_NIGHT_MODE_END_MIN, 0, _DAY_MIN - 1)
        if not self.governor.set_night(mode, start_min, end_min, now_min, hal.ticks_ms()):
            return refusal.field(bad, wire.F_NIGHT_MODE_NOW_MIN, 0, _DAY_MIN - 1)
        return 0

    def group(self, group_id, value):
        """GROUP_VALUE message: the circle effect follows value."""
        self.inputs.group = value
        return 0

    def _go_safe(self):
        self._set(wire.Scene(wire.EFFECT_SOLID, _SAFE_BRIGHTNESS, SAFE_COLOR, _SAFE_TRANSITION_MS))
        self.safe = True
        self.source = wire.SCENE_SOURCE_POD
        self.report()

    def fade_safe(self):
        """FADE_SAFE command (a participant's stop): the safe glow within 2 s, held until a
        SCENE; a waiting SCENE_AT is dropped. An "off" scene stays dark. Always 0 (ACK)."""
        self._at = None
        old = self._old
        if old is not None:  # a cross-fade in progress ends: the target stands still at once
            old.stop()
            self._old = None
        if self.scene.effect != wire.EFFECT_OFF:
            # no cross-fade: the governor's fast fade takes every LED straight to the glow
            self._set(wire.Scene(wire.EFFECT_SOLID, _SAFE_BRIGHTNESS, SAFE_COLOR))
        self._shown_any = True
        self.stopped = True
        self.safe = False
        self.source = wire.SCENE_SOURCE_SET
        self.report()
        return 0

    def report(self):
        """Send SCENE_SHOWN: the scene shown, who chose it, the safety state (module doc)."""
        lk = self._link
        if lk is None or not self._shown_any:
            return
        state = 0
        if self._night_shown:
            state |= wire.SHOWN_NIGHT
        if self.safe:
            state |= wire.SHOWN_LINK_SAFE
        if self.stopped:
            state |= wire.SHOWN_STOPPED
        end = wire.pack_scene_shown(lk.body, _HDR, self.source, state, self.scene)
        lk.send(wire.T_SCENE_SHOWN, end)
        self.reports += 1

    # -- frames ----------------------------------------------------------
    def render(self, now_ms):
        """Compute, govern and show one frame for pod time now_ms. No allocation."""
        self.show(self.compute(now_ms))

    def show(self, shown):
        self.leds.write(shown)
        self.frames_rendered += 1

    def compute(self, now_ms):
        """Compute and govern the frame for pod time now_ms; returns the bytes to show."""
        diff = hal.ticks_diff
        lk = self._link
        if lk is not None and lk.heard and not self.safe and not self.stopped and self.scene.effect != wire.EFFECT_OFF:
            if diff(now_ms, lk.last_rx_ms) > self._fade_after_ms:
                self._go_safe()
        s = self.scene
        t = diff(now_ms, self._start_ms)
        if t < 0:
            t = 0
        elif t >= _REBASE_MS:
            # move the start by whole periods: same phase, small numbers
            per = s.period_ms if s.period_ms else 1000
            step = t - t % per
            self._start_ms = hal.ticks_add(self._start_ms, step)
            t -= step
        frame = self.frame
        nb = self.count * 3
        self._fx.render(t, frame)
        if s.brightness < 255:
            effects.scale(frame, nb, s.brightness)
        old = self._old
        if old is not None:
            if t >= s.transition_ms:
                old.stop()
                self._old = None
            else:
                ot = diff(now_ms, self._old_start_ms)
                of = self._old_frame
                old.render(ot if ot >= 0 else 0, of)
                if self._old_bri < 255:
                    effects.scale(of, nb, self._old_bri)
                _blend(frame, of, nb, t * 256 // s.transition_ms)
        g = self.governor
        night = g.night_mode and g.is_night(now_ms, diff, hal.ticks_add)
        shown = g.govern(frame, now_ms, diff(now_ms, self._last_ms), night, self._strobe, self.stopped)
        self._last_ms = now_ms
        if night != self._night_shown:
            self._night_shown = night
            self.report()
        return shown

    async def run(self, watchdog=None):
        ticks_us = hal.ticks_us
        ticks_ms = hal.ticks_ms
        diff = hal.ticks_diff
        add = hal.ticks_add
        # frames wake on a hardware timer: an asyncio sleep ends only at the next
        # 10 ms RTOS tick, too coarse for a 16.7 ms frame with a 3 ms lead
        timer = hal.FrameTimer()
        leds = self.leds
        due = add(ticks_us(), self.period_us)
        fed = collected = ticks_ms()
        on_time = 0
        while True:
            # wake a lead before the frame's instant: it shows the newest inputs
            timer.arm(add(due, -self.lead_us))
            await timer.wait()
            late_us = diff(ticks_us(), due)
            if late_us > 0:
                # past the instant before even starting: skip to the next slot on
                # the same grid (no burst to catch up, and the phase is kept)
                self.render_overruns += 1
                self._more_lead()
                on_time = 0
                due = add(due, (late_us // self.period_us + 1) * self.period_us)
            # the frame is computed for the instant it will be shown
            frame_ms = add(ticks_ms(), diff(due, ticks_us()) // 1000)
            if self._at is not None:
                self.due_scene(due, frame_ms)
            shown = self.compute(frame_ms)
            late_us = leds.show_at(shown, due)  # returns at once; the LED timer starts it at due
            self.frames_rendered += 1
            if late_us > _LATE_US:
                self.late_frames += 1
                self._more_lead()
                on_time = 0
            else:
                on_time += 1
                if on_time >= _LEAD_RELAX_FRAMES:
                    on_time = 0
                    if self.lead_us > _LEAD_MIN_US:
                        self.lead_us -= _LEAD_STEP_US >> 2
            if watchdog is not None and diff(frame_ms, fed) >= _FEED_EVERY_MS:
                watchdog.feed()
                fed = frame_ms
            if diff(frame_ms, collected) >= _GC_EVERY_MS:
                # after the instant, not before: a pause then would hold the frame's start
                timer.arm(add(due, _GC_AFTER_US))
                await timer.wait()
                gc.collect()
                self.collections += 1
                collected = frame_ms
            period = self.period_us
            if self._phase_new:
                # next grid instant at least half a frame away: never two frames at once
                self._phase_new = False
                n = diff(add(due, period >> 1), self._phase_us)
                due = add(self._phase_us, (n // period + 1) * period)
            else:
                due = add(due, period)

    def _more_lead(self):
        # a frame came too late: start computing earlier, up to most of a period
        top = self.period_us - _LEAD_GAP_US
        lead = self.lead_us + _LEAD_STEP_US
        self.lead_us = lead if lead < top else (top if top > _LEAD_MIN_US else _LEAD_MIN_US)
