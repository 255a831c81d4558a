# The emulator HAL shim's clock wraps at 2**30 like the ESP32's, starting
# where HYPNOLUM_TICKS_MS0/US0 say; and its file helpers are atomic.
import os

# set before hal is imported: the shim reads them once
os.putenv("HYPNOLUM_TICKS_MS0", str((1 << 30) - 50))
os.putenv("HYPNOLUM_TICKS_US0", str((1 << 30) - 50000))
os.putenv("HYPNOLUM_UID", "0a0b0c0d0e0f")

import time  # noqa: E402

import hal  # noqa: E402

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
    assert 0 <= time.ticks_us() - shown_us < 100000  # the host's monotonic clock, not the pod's
    assert written_us == shown_us  # write(): lit when written
    assert d[30:] == frame  # R, G, B whatever the wire order
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
        assert struct.unpack_from("<I", rx.recv(1000), 8)[0] == i + 1
    assert leds.dropped == 0
    for _ in range(12):
        leds.write(frame)  # nobody reading: dropped and counted, never blocking
    assert 0 < leds.dropped <= 12, leds.dropped
    rx.close()


def test_show_at_lights_at_the_scheduled_instant_or_says_how_late():
    import struct

    rx = _bind_dgram("leds.sock")
    leds = hal.Leds(2, "GRB")
    frame = bytearray(6)
    lo = time.ticks_us() + 20000  # the same instant on the host clock lies between lo and hi
    due = hal.ticks_add(hal.ticks_us(), 20000)
    hi = time.ticks_us() + 20000
    assert leds.show_at(frame, due) == 0
    after = time.ticks_us()
    _, _, _, _, shown_us, written_us = struct.unpack_from("<4sIIHQQ", rx.recv(1000))
    assert lo - 100 <= shown_us <= hi + 100, (shown_us - lo, hi - lo)  # the scheduled instant, on the host clock
    assert shown_us <= written_us <= after  # written once that instant came
    late = leds.show_at(frame, hal.ticks_add(hal.ticks_us(), -3000))
    assert 3000 <= late < 3000 + 50000, late
    _, _, _, _, shown_us, written_us = struct.unpack_from("<4sIIHQQ", rx.recv(1000))
    assert shown_us == written_us  # a late frame lights when it is handed over
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
