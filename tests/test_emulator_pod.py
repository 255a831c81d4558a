"""EmulatedPod at the OS boundary: the pty and its stable symlink, the relay,
unplug/replug, and the watchdog supervision.

Here the test itself plays the firmware's side of the socket contract
(docs/emulator.md): the interpreter runs an idle script, and the test connects
to link.sock / sys.sock as the HAL shim would. The real firmware is exercised
in test_emulator_e2e.py.
"""
import asyncio
import json
import os
import socket
import stat
import struct
import time

import pytest
import serial

from hypnolum.emulator.pod import EmulatedPod, PodError

IDLE = "import time\nprint('idle up')\nwhile True:\n    time.sleep(1)\n"


async def until(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def pod(tmp_path):
    script = tmp_path / "idle.py"
    script.write_text(IDLE)
    p = EmulatedPod("pod-07", tmp_path / "emu" / "pod-07", seed=5, launch=script, micropypath=[".frozen"])
    await p.start()
    yield p
    pid = p.pid
    await p.stop()
    if pid is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def connect(path, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_UNIX, kind)
    s.connect(str(path))
    s.setblocking(False)
    return s


async def read_serial(port, n, timeout=3.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        assert time.monotonic() < deadline, f"read {buf!r}, wanted {n} bytes"
        buf += port.read(n - len(buf))
        await asyncio.sleep(0.01)
    return buf


async def test_pod_dir_config_env_and_sockets(pod):
    d = pod.dir
    cfg = json.loads((d / "pod.json").read_text())
    assert cfg == {"pod_id": "pod-07", "led_count": 30}  # and the firmware's defaults for every other key
    for name in ("link.sock", "headset.sock", "leds.sock", "sys.sock"):
        assert stat.S_ISSOCK((d / name).stat().st_mode), name
    await until(lambda: "idle up" in pod.tail(), what="interpreter output")
    assert "idle up" in (d / "micropython.log").read_text()
    env = open(f"/proc/{pod.pid}/environ", "rb").read().split(b"\0")
    env = dict(e.decode().split("=", 1) for e in env if b"=" in e)
    assert env["HYPNOLUM_POD_DIR"] == str(d)
    assert env["MICROPYPATH"] == ".frozen"
    assert 2**30 - 8000 <= int(env["HYPNOLUM_TICKS_MS0"]) <= 2**30 - 3000
    assert 2**30 - 8_000_000 <= int(env["HYPNOLUM_TICKS_US0"]) <= 2**30 - 3_000_000
    assert len(env["HYPNOLUM_UID"]) == 12 and int(env["HYPNOLUM_UID"], 16) >= 0


async def test_pty_symlink_relay_unplug_replug(pod):
    link = pod.tty_path
    assert link == pod.dir.parent / "pod-07.tty"
    first = os.readlink(link)
    assert first.startswith("/dev/pts/") and os.path.realpath(link) == first
    fw = connect(pod.dir / "link.sock")  # the firmware's end
    await pod.wait_link(3)
    host = serial.Serial(str(link), timeout=0)
    try:
        host.write(b"to pod")
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(fw, 100), 3) == b"to pod"
        fw.send(b"to host\x00")
        assert await read_serial(host, 8) == b"to host\x00"

        pod.unplug()
        assert not os.path.lexists(link)
        with pytest.raises(serial.SerialException):  # the port vanished under the host
            await read_serial(host, 1, timeout=1)
        fw.send(b"lost")  # nobody attached: dropped, not queued
        await until(lambda: pod.counters.link_dropped_bytes >= 4, what="drop count")

        pod.replug()
        second = os.readlink(link)
        assert second.startswith("/dev/pts/") and os.path.exists(second)
        host2 = serial.Serial(str(link), timeout=0)
        fw.send(b"again")
        assert await read_serial(host2, 5) == b"again"  # and nothing from before the replug
        host2.close()
    finally:
        host.close()
        fw.close()


async def test_unread_output_holds_the_firmware_back(pod):
    # USB CDC, not a UART: while nobody reads the port the host does not take the
    # IN data, so link.sock stops being read and the firmware's writes stop going in
    fw = connect(pod.dir / "link.sock")
    fw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    await pod.wait_link(3)
    try:
        stream = bytes(range(1, 256)) * 400  # 100 KiB
        sent = 0
        idle = 0
        while sent < len(stream) and idle < 20:  # 0.2 s without progress: held back
            try:
                sent += fw.send(stream[sent:sent + 1024])
                idle = 0
            except BlockingIOError:
                idle += 1
                await asyncio.sleep(0.01)
        assert 4 * 1024 <= sent < 32 * 1024  # a tty buffer and a socket's, not everything
        assert pod.counters.link_dropped_bytes == 0
        host = serial.Serial(str(pod.tty_path), timeout=0)  # pyserial flushes what waited at the tty
        got = b""
        quiet = 0
        while quiet < 50:  # until 0.5 s without bytes
            more = host.read(1 << 20)
            got += more
            quiet = 0 if more else quiet + 1
            await asyncio.sleep(0.01)
        assert sent - len(got) <= 5 * 1024  # at most the tty's buffer was lost
        assert got == stream[sent - len(got):sent]  # the rest came through, in order
        assert pod.counters.link_dropped_bytes == 0
        host.close()
    finally:
        fw.close()


async def test_missed_watchdog_restarts_the_interpreter(pod):
    sysd = connect(pod.dir / "sys.sock", socket.SOCK_DGRAM)
    first_pid = pod.pid
    sysd.send(b"WDT1" + struct.pack("<I", 300))
    for _ in range(10):  # fed for a second, longer than the timeout: no reset
        sysd.send(b"WDTF")
        last_feed = time.monotonic()
        await asyncio.sleep(0.1)
    assert pod.counters.boots == 1 and pod.pid == first_pid
    await pod.wait_boots(2, timeout=3)  # starved: reset ~300 ms after the last feed
    assert time.monotonic() - last_feed >= 0.3
    assert pod.counters.watchdog_resets == 1 and pod.counters.last_reset_reason == "watchdog"
    assert pod.pid != first_pid
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    await asyncio.sleep(0.5)  # the new boot starts without a watchdog
    assert pod.counters.boots == 2
    sysd.close()


async def test_reset_request_and_manual_reboot(pod):
    sysd = connect(pod.dir / "sys.sock", socket.SOCK_DGRAM)
    sysd.send(b"RST!")
    await pod.wait_boots(2, timeout=3)
    assert pod.counters.reset_requests == 1 and pod.counters.last_reset_reason == "reset"
    await pod.reboot()
    assert pod.counters.boots == 3 and pod.counters.manual_reboots == 1 and pod.counters.reboots == 2
    sysd.close()


async def test_frozen_interpreter_is_reset_by_the_watchdog(pod):
    sysd = connect(pod.dir / "sys.sock", socket.SOCK_DGRAM)
    sysd.send(b"WDT1" + struct.pack("<I", 200))
    pod.pause()
    await pod.wait_boots(2, timeout=3)
    assert pod.counters.watchdog_resets == 1
    sysd.close()


async def test_crashing_firmware_is_restarted_and_reported(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("raise ValueError('boom at boot')\n")
    p = EmulatedPod("pod-09", tmp_path / "pod-09", launch=script, micropypath=[".frozen"])
    await p.start()
    try:
        await p.wait_boots(2, timeout=5)
        assert p.counters.crashes >= 1 and 1 in p.counters.exit_codes
        assert "boom at boot" in p.tail()
        with pytest.raises(PodError, match="boom at boot"):
            await p.wait_link(0.2)
    finally:
        await p.stop()


async def test_missing_launch_script_is_an_error(tmp_path):
    p = EmulatedPod("pod-10", tmp_path / "pod-10", launch=tmp_path / "nope.py")
    with pytest.raises(PodError, match="no launch script"):
        await p.start()


async def test_link_latency_relay_delays_each_way_in_order(tmp_path):
    script = tmp_path / "idle.py"
    script.write_text(IDLE)
    p = EmulatedPod("pod-09", tmp_path / "emu" / "pod-09", seed=5, launch=script, micropypath=[".frozen"])
    p.link_jitter_s = (0.004, 0.006)
    await p.start()
    loop = asyncio.get_running_loop()
    try:
        env = open(f"/proc/{p.pid}/environ", "rb").read().split(b"\0")
        env = dict(e.decode().split("=", 1) for e in env if b"=" in e)
        assert env["HYPNOLUM_LINK_SOCK"] == "link-relay.sock"
        fw = connect(p.dir / "link-relay.sock")  # the firmware's end, through the relay
        await p.wait_link(3)
        host = serial.Serial(str(p.tty_path), timeout=0)
        try:
            for _ in range(5):
                t0 = time.monotonic()
                host.write(b"ping")
                assert await asyncio.wait_for(loop.sock_recv(fw, 100), 3) == b"ping"
                down = time.monotonic() - t0
                assert 0.004 <= down < 0.006 + 0.05, down
                t0 = time.monotonic()
                fw.send(b"po")
                fw.send(b"ng")  # arrives while the first bytes wait: leaves with them
                assert await read_serial(host, 4) == b"pong"
                up = time.monotonic() - t0
                assert 0.004 <= up < 0.006 + 0.05, up
        finally:
            host.close()
            fw.close()
        relay = p._relay.pid
    finally:
        await p.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(relay, 0)
    assert not (p.dir / "link-relay.sock").exists()
