"""The virtual LED array: datagram parsing, capture over a real socket, waiting."""
import asyncio
import socket
import struct

import pytest

from hypnolum.emulator.leds import LedDatagramError, VirtualLeds, build_datagram, parse_datagram


def test_parse_datagram_fields():
    data = struct.pack("<4sIIH", b"LED1", 2**30 - 5, 7, 2) + bytes([255, 0, 0, 1, 2, 3])
    f = parse_datagram(data, host_time=1.5)
    assert (f.host_time, f.ticks_ms, f.frame_no, f.count) == (1.5, 2**30 - 5, 7, 2)
    assert f.pixels() == [(255, 0, 0), (1, 2, 3)]
    assert not f.all((255, 0, 0))
    assert parse_datagram(build_datagram(1, 2, bytes([9, 8, 7]) * 4)).all((9, 8, 7))


@pytest.mark.parametrize(
    "data",
    [
        b"LED1\0\0",  # short header
        struct.pack("<4sIIH", b"LEDX", 0, 0, 1) + b"abc",  # magic
        struct.pack("<4sIIH", b"LED1", 0, 0, 2) + b"abc",  # count says 2, one LED sent
        struct.pack("<4sIIH", b"LED1", 0, 0, 1) + b"abcd",  # trailing byte
    ],
)
def test_malformed_datagrams_are_refused(data):
    with pytest.raises(LedDatagramError):
        parse_datagram(data)
    leds = VirtualLeds()
    assert leds.feed(data) is None
    assert (leds.errors, leds.frames, leds.last) == (1, 0, None)


def test_history_is_bounded():
    leds = VirtualLeds(history=3)
    for i in range(10):
        leds.feed(build_datagram(i, i, b"\0\0\0"))
    assert [f.frame_no for f in leds.history] == [7, 8, 9]
    assert leds.frames == 10 and leds.last.frame_no == 9


async def test_capture_over_datagram_socket(tmp_path):
    leds = VirtualLeds(tmp_path / "leds.sock")
    leds.open()
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx.connect(str(tmp_path / "leds.sock"))
    try:
        waiter = asyncio.create_task(leds.wait_for(lambda f: f.all((255, 0, 0)), timeout=3))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        tx.send(build_datagram(100, 1, bytes([255, 0, 0]) * 30))
        tx.send(build_datagram(120, 2, bytes([0, 0, 255]) * 30))  # same burst: no frame is skipped
        frame = await waiter
        assert (frame.frame_no, frame.ticks_ms, frame.count) == (1, 100, 30)
        await leds.wait_for(lambda f: f.frame_no == 2, timeout=3)
        assert leds.last_rgb() == bytes([0, 0, 255]) * 30
        assert len(leds.since(frame.host_time)) == 2
        with pytest.raises(TimeoutError):
            await leds.wait_for(lambda f: f.frame_no == 99, timeout=0.1)
    finally:
        tx.close()
        leds.close()
