"""The virtual OpenBCI Cyton: command replies, packet format, pacing, signal."""
import asyncio
import socket
import time

import numpy as np
import pytest

from hypnolum.emulator import headset
from hypnolum.emulator.headset import BANNER, PACKET_SIZE, UV_PER_COUNT, Cyton, VirtualHeadset, parse_packets


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_banner_and_defaults_end_in_dollars():
    c = Cyton(0)
    assert c.receive(b"v") == BANNER
    assert BANNER.startswith(b"OpenBCI V3 8-16 channel\n") and BANNER.endswith(b"$$$")
    assert c.receive(b"d") == b"updating channel settings to default$$$"
    assert c.receive(b"\n9") == b""  # nothing for unused bytes
    assert c.stats.unknown_commands == 1


def test_stream_packets_are_33_bytes_with_counter_and_footer():
    clock = FakeClock()
    c = Cyton(1, clock)
    c.receive(b"b")
    data = c.packets_until(clock.t + 2.0)
    assert len(data) == 501 * PACKET_SIZE  # the packet at t0, then 250 per second
    raw = np.frombuffer(data, np.uint8).reshape(-1, PACKET_SIZE)
    assert (raw[:, 0] == 0xA0).all() and (raw[:, 32] == 0xC0).all()
    pk = parse_packets(data)
    assert list(pk["counter"][:3]) == [0, 1, 2]
    assert pk["counter"][256] == 0 and pk["counter"][300] == 44  # u8 wraps
    assert tuple(pk["accel"][0]) == (0, 0, 8000)  # 1 g on Z at 0.000125 g/count


def test_pacing_has_no_drift_and_stop_stops():
    clock = FakeClock()
    c = Cyton(2, clock)
    c.receive(b"b")
    total = 0
    for _ in range(1000):  # 20 ms bursts for 20 s
        clock.t += 0.02
        total += len(c.packets_until(clock.t)) // PACKET_SIZE
    assert total + 1 == 20 * 250 + 1  # + the packet at t0 taken by the first burst
    c.receive(b"s")
    clock.t += 1
    assert c.packets_until(clock.t) == b""
    c.receive(b"b")  # a new stream restarts the counter
    assert parse_packets(c.packets_until(clock.t))["counter"][0] == 0


def test_signal_is_deterministic_per_seed_with_occipital_alpha():
    clock = FakeClock()
    awake = headset.Participant.from_seed(7, script=(("wake", 60.0),), blinks_per_min=0.0)
    a, b = Cyton(7, clock, participant=awake), Cyton(7, clock, participant=awake)
    other = Cyton(8, clock)
    for c in (a, b, other):
        c.receive(b"b")
    da, db, do = (c.packets_until(clock.t + 8.0) for c in (a, b, other))
    assert da == db and da != do
    uv = parse_packets(da)["counts"] * UV_PER_COUNT
    freqs = np.fft.rfftfreq(len(uv), 1 / 250)
    spectrum = np.abs(np.fft.rfft(uv - uv.mean(axis=0), axis=0)) ** 2
    alpha = (freqs >= 8) & (freqs < 13)
    share = spectrum[alpha].sum(axis=0) / spectrum[(freqs > 0.5) & (freqs < 45)].sum(axis=0)
    o1 = 6  # O1 in the montage
    assert share[o1] > 0.5  # occipital alpha dominates while awake
    assert abs(freqs[alpha][spectrum[alpha, o1].argmax()] - awake.alpha_hz) < 0.3
    assert 10 < np.abs(uv).max() < 300  # tens of µV
    assert 0.02 < UV_PER_COUNT < 0.023


def test_parse_packets_rejects_garbage():
    with pytest.raises(ValueError):
        parse_packets(b"\x00" * PACKET_SIZE)
    with pytest.raises(ValueError):
        parse_packets(b"\xa0" * 10)


async def read_until(sock, marker, timeout=3.0):
    loop = asyncio.get_running_loop()
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        assert time.monotonic() < deadline, f"no {marker!r} in {buf[-80:]!r}"
        buf += await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
    return buf


async def test_virtual_headset_over_socketpair():
    ours, pod_side = socket.socketpair()
    ours.setblocking(False)
    hs = VirtualHeadset(seed=3)
    hs.attach(pod_side)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(ours, b"v")
        assert (await read_until(ours, b"$$$")) == BANNER
        await loop.sock_sendall(ours, b"d")
        assert (await read_until(ours, b"$$$")) == headset.DEFAULTS_REPLY
        await loop.sock_sendall(ours, b"b")
        t0 = time.monotonic()
        buf = b""
        while len(buf) < 125 * PACKET_SIZE:  # half a second of samples
            buf += await asyncio.wait_for(loop.sock_recv(ours, 65536), 2)
        elapsed = time.monotonic() - t0
        n = len(buf) // PACKET_SIZE
        pk = parse_packets(buf[: n * PACKET_SIZE])
        assert (np.diff(pk["counter"].astype(int)) % 256 == 1).all()
        assert n <= elapsed * 250 + 2  # paced at 250 Hz, not faster
        await loop.sock_sendall(ours, b"s")
        await asyncio.sleep(0.1)
        while True:  # drain what was in flight
            try:
                ours.recv(65536)
            except BlockingIOError:
                break
        await asyncio.sleep(0.1)
        with pytest.raises(BlockingIOError):
            ours.recv(1)
        assert hs.received == bytearray(b"vdbs")
    finally:
        await hs.stop()
        ours.close()


async def test_unread_stream_is_dropped_not_queued():
    ours, pod_side = socket.socketpair()
    pod_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # fill it fast
    hs = VirtualHeadset(seed=4)
    hs.attach(pod_side)
    try:
        ours.sendall(b"b")
        deadline = time.monotonic() + 10
        while hs.stats.packets_dropped == 0:  # nobody reads: the socket buffer fills
            assert time.monotonic() < deadline, hs.stats
            await asyncio.sleep(0.05)
    finally:
        await hs.stop()
        ours.close()
