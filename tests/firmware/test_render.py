# Effects and the render step under MicroPython: colours, brightness,
# breathing, transitions, refusals, no allocation per frame, and timing.
import gc

import asyncio
import hal
from pod import effects, render, wire


class FakeLeds:
    def __init__(self, count):
        self.count = count
        self.last = None
        self.frames = 0

    def write(self, rgb):
        self.last = bytes(rgb)
        self.frames += 1


def make(count=4, fps=60):
    leds = FakeLeds(count)
    return leds, render.Renderer(leds, fps)


def test_boot_is_dark():
    leds, r = make()
    r.render(hal.ticks_ms())
    assert leds.last == bytes(12)


def test_solid_with_brightness():
    leds, r = make(3)
    assert r.apply(wire.EFFECT_SOLID, 255, (255, 128, 0), 0, 0, ()) == 0
    r.render(hal.ticks_ms())
    assert leds.last == bytes((255, 128, 0)) * 3
    r.apply(wire.EFFECT_SOLID, 128, (255, 128, 0), 0, 0, ())
    r.render(hal.ticks_ms())
    assert leds.last == bytes((128, 64, 0)) * 3


def test_breathe_is_dark_at_start_full_mid_period():
    leds, r = make(1)
    r.apply(wire.EFFECT_BREATHE, 255, (200, 100, 50), 0, 1000, ())
    t0 = r._start_ms
    r.render(t0)
    assert leds.last == b"\x00\x00\x00"
    r.render(hal.ticks_add(t0, 500))
    assert leds.last == bytes((200, 100, 50))
    r.render(hal.ticks_add(t0, 250))
    assert 0 < leds.last[0] < 200
    r.render(hal.ticks_add(t0, 1500))  # periodic
    assert leds.last == bytes((200, 100, 50))


def test_breathe_across_tick_wrap():
    leds, r = make(1)
    r.apply(wire.EFFECT_BREATHE, 255, (255, 255, 255), 0, 1000, ())
    r._start_ms = hal.TICKS_PERIOD - 100  # scene began 100 ms before the wrap
    r.render(400)  # 500 ms later, after the wrap
    assert leds.last == b"\xff\xff\xff"


def test_transition_cross_fades():
    leds, r = make(1)
    r.apply(wire.EFFECT_SOLID, 255, (200, 0, 0), 0, 0, ())
    r.render(hal.ticks_ms())
    r.apply(wire.EFFECT_SOLID, 255, (0, 0, 200), 1000, 0, ())
    t0 = r._start_ms
    r.render(hal.ticks_add(t0, 500))
    assert leds.last == bytes((100, 0, 100))
    r.render(hal.ticks_add(t0, 1000))
    assert leds.last == bytes((0, 0, 200))


def test_refusals_leave_scene_unchanged():
    leds, r = make(1)
    r.apply(wire.EFFECT_SOLID, 255, (1, 2, 3), 0, 0, ())
    assert r.apply(99, 255, (0, 0, 0), 0, 0, ()) == wire.NACK_REASON_UNKNOWN_EFFECT
    assert r.apply(wire.EFFECT_BREATHE, 255, (0, 0, 0), 0, 0, ()) == wire.NACK_REASON_BAD_PARAM
    assert r.scene.effect == wire.EFFECT_SOLID and bytes(r.scene.color) == b"\x01\x02\x03"


def test_effect_table_covers_the_protocol_enum():
    assert sorted(effects.EFFECTS) == sorted(wire.EFFECT.values())


def test_no_allocation_per_frame():
    leds = hal.Leds(30, "GRB")  # the real HAL write path (datagrams dropped if nobody listens)
    r = render.Renderer(leds, 60)
    r.apply(wire.EFFECT_BREATHE, 200, (10, 20, 30), 300, 2000, ())
    t = hal.ticks_ms()
    r.render(t)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in range(100):
        r.render(hal.ticks_add(t, i * 17))
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


async def test_run_keeps_the_frame_rate_and_feeds_the_watchdog():
    class Dog:
        feeds = 0

        def feed(self):
            Dog.feeds += 1

    leds, r = make(8, fps=100)
    task = asyncio.create_task(r.run(Dog()))
    await asyncio.sleep_ms(600)
    task.cancel()
    await asyncio.sleep_ms(0)
    assert 50 <= r.frames_rendered <= 62, r.frames_rendered
    assert Dog.feeds >= 1
