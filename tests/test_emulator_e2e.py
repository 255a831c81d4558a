"""End to end: the real firmware under MicroPython, driven through its pty
exactly as hostd drives a board, and the `hypnolum emulate` command."""
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from hypnolum import paths
from hypnolum.protocol import codec
from hypnolum.emulator.runner import Emulator

from helpers.pty_host import PtyHost

pytestmark = pytest.mark.micropython

REPO = paths.ROOT


Host = PtyHost


@pytest.fixture
async def emu(tmp_path):
    async with Emulator(2, tmp_path / "emu", seed=1) as e:
        await e.wait_links(15)
        yield e
    for pod in e.pods:
        assert pod.pid is None


async def test_two_pods_hello_status_eeg_and_scene(emu):
    hosts = {pod.pod_id: PtyHost(pod.tty_path) for pod in emu.pods}
    try:
        for pod_id, host in hosts.items():
            host.connect()
            hello = await host.wait_for(lambda f: f.name == "hello", what="HELLO")
            assert hello.fields["pod_id"] == pod_id
            assert hello.fields["fingerprint"] == codec.FINGERPRINT
            assert hello.fields["led_count"] == 30
            await host.wait_for(lambda f: f.name == "status", what="STATUS")

        # EEG: contiguous sample sequence numbers across batches
        host = hosts["pod-01"]
        batches = []
        while sum(len(b.fields["samples"]) for b in batches) < 3 * 8 * 500:  # two seconds
            batches.append(await host.wait_for(lambda f: f.name == "eeg_batch" and f not in batches, what="EEG_BATCH"))
        for prev, nxt in zip(batches, batches[1:]):
            n_prev = len(prev.fields["samples"]) // (3 * prev.fields["channels"])
            assert nxt.fields["first_seq"] == (prev.fields["first_seq"] + n_prev) & 0xFFFFFFFF
        counts = codec.eeg_counts(batches[-1].fields)
        assert counts.shape[1] == 8 and counts.any()

        # a red scene on pod-01 only
        red = (255, 0, 0)
        pod1, pod2 = emu["pod-01"], emu["pod-02"]
        t_cmd = time.monotonic()
        seq = host.send(
            "scene",
            {"effect": "solid", "brightness": 255, "color": list(red), "transition_ms": 0, "period_ms": 0, "palette": "warm", "flags": 0, "params": []},
        )
        ack = await host.wait_for(lambda f: f.name in ("ack", "nack") and f.fields["ack_seq"] == seq, what="ACK")
        assert ack.name == "ack", ack
        frame = await pod1.leds.wait_for(lambda f: f.all(red) or _reddish(f), timeout=5)
        assert frame.host_time >= t_cmd
        await pod2.leds.wait_frames(3, timeout=5)  # pod-02 keeps rendering, never red
        assert not any(_reddish(f) for f in pod2.leds.since(t_cmd))
        for pod in emu.pods:
            assert (pod.counters.crashes, pod.counters.watchdog_resets) == (0, 0), pod.tail()
    finally:
        for h in hosts.values():
            h.close()


async def test_reboot_and_replug_are_seen_by_the_host(emu):
    pod = emu["pod-02"]
    host = PtyHost(pod.tty_path)
    try:
        host.connect()
        first = await host.wait_for(lambda f: f.name == "hello", what="HELLO")
        await pod.reboot()
        await pod.wait_link(15)
        host.connect()
        # the answer to the first CONNECT may still be queued behind the boot HELLO: wait for the new boot's
        again = await host.wait_for(
            lambda f: f.name == "hello" and f.fields["boot_id"] != first.fields["boot_id"], what="HELLO after reboot"
        )
        assert again.fields["boot_id"] != first.fields["boot_id"]
        assert pod.counters.manual_reboots == 1

        pod.unplug()
        with pytest.raises(serial.SerialException):
            await host.wait_for(lambda f: False, timeout=1)
        host.close()
        pod.replug()
        host = PtyHost(pod.tty_path)  # same stable path, new pty
        host.connect()
        hello = await host.wait_for(lambda f: f.name == "hello", what="HELLO after replug")
        assert hello.fields["boot_id"] == again.fields["boot_id"]  # unplugging does not reset the pod
    finally:
        host.close()


def _reddish(frame):
    """Red as shown after the safety governor (which may cap brightness)."""
    px = frame.pixels()
    return bool(px) and all(r > 0 and g == 0 and b == 0 for r, g, b in px)


def _children(pid):
    """Processes whose parent is ``pid``."""
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry.name))
    return kids


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cli_prints_ptys_and_cleans_up_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypnolum", "emulate", "--pods", "2", "--dir", str(tmp_path / "emu")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        lines = [proc.stdout.readline().split() for _ in range(2)]
        assert [ln[0] for ln in lines] == ["pod-01", "pod-02"], (lines, proc.stderr.read() if proc.poll() else "")
        for _pod_id, path in lines:
            assert Path(path).is_symlink()
            assert os.path.realpath(path).startswith("/dev/pts/")
            assert stat.S_ISCHR(os.stat(path).st_mode)
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            assert os.isatty(fd)
            os.close(fd)
        children = _children(proc.pid)
        assert len(children) == 2
        for pid in children:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            # the board's interpreter: 32-bit v1.28.0, at the firmware's committed heap
            assert argv[0].endswith(b"micropython") and b"heapsize=262144" in argv, argv
            exe = Path(f"/proc/{pid}/exe").read_bytes()[:5]
            assert exe[:4] == b"\x7fELF" and exe[4] == 1, "the pods' interpreter is not a 32-bit ELF"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(15)
        finally:
            proc.kill()
    assert rc == 0, proc.stderr.read()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, "micropython processes left behind"
        time.sleep(0.05)
    for _pod_id, path in lines:
        assert not os.path.lexists(path)  # stopped cleanly, symlinks removed
