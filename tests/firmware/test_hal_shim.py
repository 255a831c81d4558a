# The emulator HAL shim's clock wraps at 2**30 like the ESP32's, starting
# where HYPNOLUM_TICKS_MS0/US0 say; it models the board's timing (RTOS tick,
# frame timer, LED transfer and show_at blocking); its file helpers are atomic.
import os

# set before hal is imported: the shim reads them once
os.putenv("HYPNOLUM_TICKS_MS0", str((1 << 30) - 50))
os.putenv("HYPNOLUM_TICKS_US0", str((1 << 30) - 50000))
os.putenv("HYPNOLUM_UID", "0a0b0c0d0e0f")
os.putenv("HYPNOLUM_CLOCK_PPM", "37.5")  # a crystal's error: the clock's ppm arithmetic runs

import gc  # noqa: E402
import time  # noqa: E402

import asyncio  # noqa: E402
import hal  # noqa: E402
import emutime  # noqa: E402

P = hal.TICKS_PERIOD


def test_period_is_the_esp32s():
    assert P == 1 << 30


def test_ticks_diff_and_add_wrap():
    assert hal.ticks_add(P - 10, 25) == 15
    assert hal.ticks_add(5, -10) == P - 5
    assert hal.ticks_diff(15, P - 10) == 25
    assert hal.ticks_diff(P - 10, 15) == -25
    assert hal.ticks_diff(P // 2 - 1, 0) == P // 2 - 1
    assert hal.ticks_diff(P // 2, 0) == -(P // 2)  # half a period is ambiguous: negative, as on the ESP32
    for a in (0, 1, P // 3, P - 1):
        for d in (0, 1, -1, 12345, -12345, P // 2 - 1):
            assert hal.ticks_diff(hal.ticks_add(a, d), a) == d


def test_clock_starts_near_the_wrap_and_crosses_it():
    t0 = hal.ticks_ms()
    u0 = hal.ticks_us()
    assert t0 >= P - 60 or t0 < 1000  # started 50 ms before the wrap
    time.sleep_ms(80)
    t1 = hal.ticks_ms()
    u1 = hal.ticks_us()
    assert t1 < t0  # wrapped
    assert 70 <= hal.ticks_diff(t1, t0) <= 200
    assert 70000 <= hal.ticks_diff(u1, u0) <= 200000
    assert 0 <= t1 < P and 0 <= u1 < P


def test_unique_id_from_env():
    assert hal.unique_id() == b"\x0a\x0b\x0c\x0d\x0e\x0f"


def test_write_file_atomic_and_read_back():
    name = "hal_test_%d.bin" % hal.ticks_us()
    try:
        assert hal.read_file(name) is None
        hal.write_file(name, b"one")
        hal.write_file(name, b"two")
        assert hal.read_file(name) == b"two"
        assert name + ".tmp" not in os.listdir(os.getenv("HYPNOLUM_POD_DIR") or ".")
    finally:
        try:
            os.remove((os.getenv("HYPNOLUM_POD_DIR") or ".") + "/" + name)
        except OSError:
            pass


def _host_now():
    # CLOCK_MONOTONIC in us, unwrapped (time.ticks_us wraps at 2**30 on the 32-bit build)
    return emutime._host_full_us(time.ticks_us(), time.ticks_ms())


def _bind_dgram(name):
    import socket
    import struct

    path = (os.getenv("HYPNOLUM_POD_DIR") or ".") + "/" + name
    try:
        os.remove(path)
    except OSError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0")
    s.settimeout(5)  # a datagram that never comes fails the test instead of hanging the module
    return s


def test_leds_datagrams_follow_the_contract_without_allocating():
    import gc
    import struct

    rx = _bind_dgram("leds.sock")
    leds = hal.Leds(3, "GRB")
    frame = bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09")
    leds.write(frame)
    d = rx.recv(1000)
    magic, t, n, count, shown_us, written_us = struct.unpack_from("<4sIIHQQ", d)
    assert (magic, n, count) == (b"LED3", 0, 3)
    assert hal.ticks_diff(hal.ticks_ms(), t) < 100
    assert 0 <= _host_now() - shown_us < 100000  # the host's monotonic clock, not the pod's
    assert written_us == shown_us  # write(): lit when written
    assert d[30:] == frame  # R, G, B whatever the wire order
    leds.show_at(frame, hal.ticks_add(hal.ticks_us(), 200))  # the LED timer's first run (its thread starts)
    time.sleep_ms(5)
    assert struct.unpack_from("<I", rx.recv(1000), 8)[0] == 1
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in range(8):  # Linux queues 10 datagrams (net.unix.max_dgram_qlen) unread
        if i & 1:
            leds.write(frame)
        else:
            leds.show_at(frame, hal.ticks_add(hal.ticks_us(), 200))
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
    for i in range(8):
        assert struct.unpack_from("<I", rx.recv(1000), 8)[0] == i + 2
    assert leds.dropped == 0
    for _ in range(12):
        leds.write(frame)  # nobody reading: dropped and counted, never blocking
    assert 0 < leds.dropped <= 12, leds.dropped
    rx.close()


def _lit(rx):
    import struct

    return struct.unpack_from("<4sIIHQQ", rx.recv(1000))[4:]  # (lit, written) host us


async def test_show_at_returns_at_once_and_lights_at_the_scheduled_instant_or_says_how_late():
    rx = _bind_dgram("leds.sock")
    leds = hal.Leds(2, "GRB")
    frame = bytearray(6)
    # no collection in the window measured: on the unix port one waits for every thread
    # (this module's Leds each keep a timer thread) to scan its stack, at a loaded
    # machine's pace (the firmware collects right after a frame's instant: pod/render.py)
    gc.collect()
    lo = _host_now() + 20000  # the same instant on the host clock lies between lo and hi
    due = hal.ticks_add(hal.ticks_us(), 20000)
    hi = _host_now() + 20000
    t0 = hal.ticks_us()
    assert leds.show_at(frame, due) == 0
    assert hal.ticks_diff(hal.ticks_us(), t0) < 2000  # the board encodes and arms its LED timer
    await asyncio.sleep_ms(30)  # the LED timer's callback runs meanwhile
    shown_us, written_us = _lit(rx)
    assert lo - 100 <= shown_us <= hi + 1000, (shown_us - lo, hi - lo)  # the scheduled instant, on the host clock
    assert shown_us <= written_us
    late = leds.show_at(frame, hal.ticks_add(hal.ticks_us(), -3000))
    assert 3000 <= late < 3000 + 50000, late
    shown_us, written_us = _lit(rx)
    assert shown_us == written_us  # a late frame lights when it is handed over
    rx.close()


def test_show_at_sends_a_waiting_frame_before_the_next_one():
    rx = _bind_dgram("leds.sock")
    leds = hal.Leds(2, "GRB")
    frame = bytearray(6)
    leds.show_at(frame, hal.ticks_add(hal.ticks_us(), 50000))
    t0 = _host_now()
    leds.write(frame)  # the first has not started yet: it goes now, then this one
    a, b = _lit(rx)[0], _lit(rx)[0]
    assert a < t0 + 5000 and a <= b, (a - t0, b - t0)
    time.sleep_ms(60)  # its timer comes and finds nothing waiting: nothing more is sent
    assert leds.frames == 2
    rx.close()


def test_watchdog_and_reset_datagrams():
    rx = _bind_dgram("sys.sock")
    hal._sys = None  # connect afresh to the socket bound just now
    wdt = hal.Watchdog(1234)
    wdt.feed()
    assert rx.recv(100) == b"WDT1\xd2\x04\x00\x00"
    assert rx.recv(100) == b"WDTF"
    try:
        hal.reset()
    except SystemExit:
        pass
    else:
        raise AssertionError("reset() returned")
    assert rx.recv(100) == b"RST!"
    rx.close()


# ---------------------------------------------------------------------------
# The board's timing (docs/emulator.md "Timing model", docs/board-port.md)


def test_pod_clock_allocates_nothing():
    a0 = (1 << 30) - 5
    us, ms, diff, add = hal.ticks_us, hal.ticks_ms, hal.ticks_diff, hal.ticks_add
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(200):
        us()
        ms()
        diff(5, a0)
        diff(a0, 5)
        add(a0, 100)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def test_pod_clock_is_exact_across_more_than_2_30_us_of_host_time():
    mask = (1 << 30) - 1
    for ppb in (37500, -50000, 0):
        src = [7]
        c = emutime.PodClock(lambda: src[0], (1 << 30) - 1000, 5, ppb)
        total = 0
        for step in (123456789, 3, 536870000, 999, 400000000, 1, 250000000) * 3:
            src[0] = (src[0] + step) & mask  # the host's ticks_us wraps at 2**30 too
            c.advance()
            total += step
        assert total > 1 << 31
        pod = total + (total * ppb + 500000000) // 1000000000
        assert c.us == ((1 << 30) - 1000 + pod) & mask, (ppb, c.us)
        assert c.ms == (5 + pod // 1000) & mask, (ppb, c.ms)
        assert c.phase == pod % emutime.TICK_US
        assert c.host_hi * (1 << 30) + c.host_lo == total
    assert emutime.clock.source is emutime.host_us  # the module clock reads the replaceable source


async def test_rtos_tick_ends_an_asyncio_sleep_ms():
    on_tick = 0
    for i in range(20):
        time.sleep_us(i * 1370 % 10000)  # start anywhere in the tick
        t0 = hal.ticks_us()
        await asyncio.sleep_ms(3)
        took = hal.ticks_diff(hal.ticks_us(), t0)
        phase = emutime.tick_phase_us()
        # asyncio's deadline is in whole ms: 3 ms asked is more than 2 ms elapsed
        assert 2000 <= took < 3000 + emutime.TICK_US + 3000, took
        if phase < 1500:
            on_tick += 1
    assert on_tick >= 15, on_tick  # woke just after a 10 ms tick boundary, not at 3 ms


async def test_frame_timer_wakes_at_its_instant_not_on_a_tick():
    ft = hal.FrameTimer()
    lates = []
    for i in range(20):
        time.sleep_us(i * 730 % 10000)
        due = hal.ticks_add(hal.ticks_us(), 4300)
        ft.arm(due)
        await ft.wait()
        lates.append(hal.ticks_diff(hal.ticks_us(), due))
    lates.sort()
    assert lates[0] >= 0, lates
    assert lates[10] < 1000, lates  # not tick-quantised: a tick would make these up to 10 ms
    assert lates[-3] < 3000, lates
    ft.arm(hal.ticks_add(hal.ticks_us(), -10))  # already past: at once
    t0 = hal.ticks_us()
    await ft.wait()
    assert hal.ticks_diff(hal.ticks_us(), t0) < 3000


async def test_frame_timer_adds_no_allocation_of_its_own():
    # arm + await on a timer that has fired: no generator, no exception object.
    # (A wait that parks goes through asyncio's I/O queue, which allocates its
    # entry per wait, on the board as well: docs/emulator.md "Timing model".)
    ft = hal.FrameTimer()
    ft.arm(hal.ticks_add(hal.ticks_us(), -5))
    await ft.wait()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(20):
        ft.arm(hal.ticks_add(hal.ticks_us(), -5))
        emutime._fire()
        await ft.wait()
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def test_led_output_leaves_the_interpreter_while_the_wire_is_busy():
    import struct

    rx = _bind_dgram("leds.sock")
    # the board's SPI transfers (firmware/hal.py Leds, from its writer thread):
    # one wire at 3.2 MHz, 4 SPI bits an LED bit (30 us an RGB LED); 1223 APA102 bytes at 8 MHz
    for kind, order, wire_us in (("ws2812", "GRB", 9000), ("sk6812_rgbw", "GRBW", 12000), ("apa102", "BGR", 1223)):
        leds = hal.Leds(300, order, kind)
        assert leds.transfer_us == wire_us, (kind, leds.transfer_us)
        frame = bytearray(900)
        t0 = hal.ticks_us()
        leds.write(frame)
        leds.write(frame)  # handed over while the first is on the wire: it lights after it
        took = hal.ticks_diff(hal.ticks_us(), t0)
        assert took < 2000, (kind, took)  # neither held the interpreter for the transfer
        a = struct.unpack_from("<Q", rx.recv(2000), 14)[0]
        b = struct.unpack_from("<Q", rx.recv(2000), 14)[0]
        assert wire_us - 20 <= b - a < wire_us + 1500, (kind, b - a)  # 20 us: pod and host clocks (ppm, whole-us reads)
        t0 = hal.ticks_us()
        leds.write(frame)  # its buffer still carries the first frame: it waits for the wire
        took = hal.ticks_diff(hal.ticks_us(), t0)
        assert wire_us - 2000 <= took < 2 * wire_us + 3000, (kind, took)
        rx.recv(2000)
    rx.close()


def _ticker():
    """A task that counts each turn it gets: (task, [turns])."""
    ran = [0]

    async def other():
        while True:
            ran[0] += 1
            await asyncio.sleep_ms(0)

    return asyncio.create_task(other()), ran


async def test_show_at_lights_at_its_instant_while_another_task_holds_the_interpreter():
    # the board's LED timer callback runs at the interpreter's next branch, not when
    # the asyncio loop comes back to the task that called show_at
    rx = _bind_dgram("leds.sock")
    leds = hal.Leds(300)
    frame = bytearray(900)
    lits = []
    for _ in range(10):
        t0 = _host_now()
        due = hal.ticks_add(hal.ticks_us(), 3000)
        assert leds.show_at(frame, due) == 0
        spin = hal.ticks_us()
        while hal.ticks_diff(hal.ticks_us(), spin) < 20000:  # another task's long turn, past the instant
            pass
        lits.append(_lit(rx)[0] - t0)
        await asyncio.sleep_ms(20)  # the wire is free again
    lits.sort()
    assert lits[0] >= 2900, lits  # never early
    assert lits[-1] < 20000, lits  # never after the long turn
    assert lits[len(lits) // 2] < 3000 + 1000, lits  # at the instant, but for this host's scheduling
    rx.close()


async def test_time_sleeps_hold_the_interpreter():
    task, ran = _ticker()
    await asyncio.sleep_ms(0)
    n = ran[0]
    time.sleep_us(3000)  # a spin on the board (mphalport.c mp_hal_delay_us)
    time.sleep_ms(5)  # <= one tick: all spin on the board
    assert ran[0] == n
    task.cancel()
    await asyncio.sleep_ms(0)


def test_a_set_flag_is_seen_before_the_descriptors_are_waited_on():
    # The board's poll looks at every object before it waits (extmod/modselect.c:398-412);
    # the unix port's first blocks up to 1 ms in poll(2) on the descriptors when any
    # object has none (modselect.c:341-396). The tick poller polls asyncio.ThreadSafeFlag
    # (the USB link's transfer flags) itself, first, so a set flag costs no such wait.
    import select
    import socket

    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # registered, never readable
    quiet.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
    p = emutime.TickPoller(select.poll())
    p.register(quiet, select.POLLIN)
    flag = asyncio.ThreadSafeFlag()
    p.register(flag, select.POLLIN)
    try:
        flag.set()
        t0 = time.ticks_us()
        for _ in range(50):
            got = [ev for ev in p.ipoll(0)]
            assert len(got) == 1 and got[0][0] is flag and got[0][1] & select.POLLIN, got
            got = [ev for ev in p.ipoll(5000)]
            assert len(got) == 1 and got[0][0] is flag, got
        took = time.ticks_diff(time.ticks_us(), t0)
        assert took < 50000, took  # 100 polls, each a 1 ms poll(2) first, would take >= 100 ms
        flag.clear()
        assert [ev for ev in p.ipoll(0)] == []
        p.unregister(flag)
        flag.set()
        assert [ev for ev in p.ipoll(0)] == []  # unregistered: not reported
    finally:
        p.unregister(quiet)
        quiet.close()


async def test_tasks_hand_over_through_flags_without_waiting_on_the_descriptors():
    # two tasks take turns through two ThreadSafeFlags, as the USB pumps and the link do
    ping, pong = asyncio.ThreadSafeFlag(), asyncio.ThreadSafeFlag()
    n = 100

    async def echo():
        for _ in range(n):
            await ping.wait()
            pong.set()

    t = asyncio.create_task(echo())
    t0 = time.ticks_us()
    for _ in range(n):
        ping.set()
        await pong.wait()
    took = time.ticks_diff(time.ticks_us(), t0)
    await t
    assert took < n * 500, took  # a 1 ms poll(2) per hand-over would take >= n ms
