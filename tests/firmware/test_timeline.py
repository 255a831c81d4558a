# The shared timeline on the pod: SCENE_AT applies a scene at a pod instant
# (wrap-safe, with the animation counted from that instant, catching up when
# the instant is past), and FRAME_PHASE puts the frames on the host's grid.
import gc

import asyncio
import hal
from pod import config, render, wire
from test_render import FakeLeds  # show_at as firmware/hal.py does it

WHITE = (255, 255, 255)


class TimedLeds(FakeLeds):
    def __init__(self, count):
        super().__init__(count)
        # per frame handed over with show_at: (due, lit) pod ticks_us, how late the loop
        # handed it over (what show_at returned), whether it lit any LED
        self.timed = []

    def show_at(self, rgb, due_us):
        late = super().show_at(rgb, due_us)
        self.timed.append((due_us, self.shown_us, late, any(rgb)))
        return late


def make(fps=100):
    leds = TimedLeds(2)
    return leds, render.Renderer(leds, fps, config.Config())


def test_scene_at_waits_for_its_instant_across_the_wrap():
    _, r = make()
    at = hal.ticks_add((1 << 30) - 3000, 7000)  # 4 ms after the wrap
    assert r.scene_at(at, wire.Scene(wire.EFFECT_SOLID, 255, WHITE, 0, 0)) == 0
    assert r.scene.effect == wire.EFFECT_OFF
    # a frame 6 ms early (before the wrap) does not take it
    assert not r.due_scene(hal.ticks_add(at, -6000), 0)
    assert r.scene.effect == wire.EFFECT_OFF
    # a frame scheduled a few us before the instant does (clock estimates differ by us)
    assert r.due_scene(hal.ticks_add(at, -40), 100)
    assert r.scene.effect == wire.EFFECT_SOLID
    assert r.scheduled_applied == 1
    assert not r.due_scene(at, 100)  # applied once


def test_scene_at_in_the_past_keeps_the_phase():
    _, r = make()
    now_ms = 5000
    at = hal.ticks_add(hal.ticks_us(), -2500000)  # started 2.5 s ago on the timeline
    assert r.scene_at(at, wire.Scene(wire.EFFECT_BREATHE, 255, WHITE, 0, 4000)) == 0
    assert r.due_scene(hal.ticks_us(), now_ms)
    # the animation is 2.5 s in, not starting over
    assert 2490 <= hal.ticks_diff(now_ms, r._start_ms) <= 2510, hal.ticks_diff(now_ms, r._start_ms)


def test_scene_at_is_checked_when_it_arrives():
    _, r = make()
    assert r.scene_at(hal.ticks_us(), wire.Scene(250, 255, WHITE, 0, 0)) == wire.NACK_REASON_UNKNOWN_EFFECT
    assert r.scene_at(hal.ticks_us(), wire.Scene(wire.EFFECT_STROBE, 255, WHITE, 0, 100)) == wire.NACK_REASON_SAFETY
    assert r._at is None


async def test_frames_land_on_the_phase_grid():
    leds, r = make(fps=100)  # 10 ms
    task = asyncio.create_task(r.run())
    await asyncio.sleep_ms(50)
    anchor = hal.ticks_add(hal.ticks_us(), 3333)
    r.frame_phase(anchor, 8000)
    await asyncio.sleep_ms(50)
    leds.timed.clear()
    await asyncio.sleep_ms(400)
    task.cancel()
    await asyncio.sleep_ms(0)
    assert r.period_us == 8000
    assert len(leds.timed) >= 40, len(leds.timed)
    late = []
    for due, shown, _, _ in leds.timed:
        assert hal.ticks_diff(due, anchor) % 8000 == 0, hal.ticks_diff(due, anchor)  # on the grid
        late.append(hal.ticks_diff(shown, due))
    late.sort()
    assert late[0] >= 0, late[0]  # never early
    # and most frames handed over before their instant, as the loop's lead is meant to do
    handed = sorted(late for _, _, late, _ in leds.timed)
    assert handed[len(handed) // 2] == 0, handed


async def test_a_frame_woken_for_too_late_is_skipped_and_the_grid_kept():
    leds, r = make(fps=100)  # 10 ms
    task = asyncio.create_task(r.run())
    await asyncio.sleep_ms(30)
    anchor = hal.ticks_add(hal.ticks_us(), 2000)
    r.frame_phase(anchor, 10000)
    await asyncio.sleep_ms(60)
    lead0 = r.lead_us
    t0 = hal.ticks_ms()
    while hal.ticks_diff(hal.ticks_ms(), t0) < 35:
        pass  # another task holds the CPU across three frame instants
    n0 = len(leds.timed)
    await asyncio.sleep_ms(100)
    task.cancel()
    await asyncio.sleep_ms(0)
    assert r.render_overruns + r.late_frames >= 1
    # frames are now computed earlier (unless the lead was already the most a 10 ms period allows)
    assert r.lead_us > lead0 or lead0 >= 9000, (lead0, r.lead_us)
    after = leds.timed[n0 + 1:]
    assert len(after) >= 7, len(after)  # no burst of catch-up frames either
    assert len(after) <= 11, len(after)
    for due, shown, _, _ in after:  # still on the grid, none early
        assert hal.ticks_diff(due, anchor) % 10000 == 0, hal.ticks_diff(due, anchor)
        assert hal.ticks_diff(shown, due) >= 0


async def test_run_applies_a_scheduled_scene_on_the_frame_at_its_instant():
    leds, r = make(fps=100)
    task = asyncio.create_task(r.run())
    at = hal.ticks_add(hal.ticks_us(), 100000)
    r.frame_phase(at, 10000)
    assert r.scene_at(at, wire.Scene(wire.EFFECT_SOLID, 255, WHITE, 0, 0)) == 0
    await asyncio.sleep_ms(200)
    task.cancel()
    await asyncio.sleep_ms(0)
    assert r.scene.effect == wire.EFFECT_SOLID
    # dark on every frame before the instant, lit from the first frame at it (the frame at the
    # instant itself unless the machine made the loop skip it, which keeps the grid)
    first = None
    for due, shown, _, lit in leds.timed:
        assert hal.ticks_diff(shown, due) >= 0
        if hal.ticks_diff(due, at) < 0:
            assert not lit, hal.ticks_diff(due, at)
        elif first is None:
            first = due
            assert lit
            assert hal.ticks_diff(due, at) % 10000 == 0, hal.ticks_diff(due, at)
    assert first is not None
    assert r.scheduled_applied == 1


class QuietLeds:
    count = 2

    def write(self, rgb):
        pass


def test_frame_phase_and_scene_at_do_not_allocate_per_frame():
    r = render.Renderer(QuietLeds(), 60, config.Config())
    r.frame_phase(hal.ticks_us(), 16666)
    r.due_scene(hal.ticks_us(), hal.ticks_ms())  # nothing pending
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(20):
        r.due_scene(hal.ticks_us(), hal.ticks_ms())
        r.show(r.compute(hal.ticks_ms()))
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def test_host_instants_at_and_past_2_30_are_taken_modulo_the_tick_period():
    # at_us / anchor_us are u32 on the wire; pod ticks wrap at 2**30: stored unmasked, a
    # ticks_diff against them was garbage (and a heap int on the board)
    P = hal.TICKS_PERIOD
    for high in (P, 2 * P, 3 * P):
        leds, r = make()
        now = hal.ticks_us()
        at = hal.ticks_add(now, 30000)
        assert r.scene_at(at + high, wire.Scene(wire.EFFECT_SOLID, 255, WHITE, 0, 0)) == 0
        assert r._at_us == at
        assert not r.due_scene(now, hal.ticks_ms())  # 30 ms ahead: still waiting
        assert r.due_scene(hal.ticks_add(at, 1000), hal.ticks_ms())
        r.frame_phase(at + high, 10000)
        assert r._phase_us == at
    leds, r = make()
    r.frame_phase(0xFFFFFFFF, 10000)
    assert r._phase_us == P - 1
    assert r.scene_at(0xFFFFFFFF, wire.Scene(wire.EFFECT_SOLID, 255, WHITE, 0, 0)) == 0
    assert r._at_us == P - 1
    assert r.due_scene(P - 1, hal.ticks_ms()) and r.scene.effect == wire.EFFECT_SOLID
