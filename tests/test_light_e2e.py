"""The light path end to end: an emulated pod driven over its pty, frames
recorded by `--record-frames`, rendered by `hypnolum render`, and the recorded
frames checked by the independent analyzer (flashes, current, fade to safe)."""
import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from hypnolum.emulator.frames import FILE_HEADER, FrameFileError, read_frames
from hypnolum.emulator.runner import Emulator
from tests.helpers import flash_analyzer as fa
from tests.test_emulator_e2e import Host

pytestmark = pytest.mark.micropython

SCENE = {"effect": "aurora", "brightness": 255, "color": [255, 255, 255], "transition_ms": 1000,
         "period_ms": 6000, "palette": "aurora", "flags": 0, "params": []}


async def keep_alive(host, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        host.send("ping", {"nonce": 1, "host_time_us": 0})
        await asyncio.sleep(0.4)
        host.frames += host.decoder.feed(host.port.read(65536))


async def test_recorded_frames_render_and_stay_within_limits(tmp_path):
    rec = tmp_path / "frames"
    async with Emulator(1, tmp_path / "emu", led_count=24, record_frames=rec) as emu:
        await emu.wait_links(15)
        pod = emu.pods[0]
        host = Host(pod.tty_path)
        try:
            host.connect()
            await host.wait_for(lambda f: f.name == "hello", what="HELLO")
            seq = host.send("night_mode", {"mode": "off", "start_min": 0, "end_min": 0, "now_min": 0})
            ack = await host.wait_for(lambda f: f.name in ("ack", "nack") and f.fields["ack_seq"] == seq)
            assert ack.name == "ack"
            seq = host.send("scene", dict(SCENE, effect="strobe", period_ms=100, flags=1))
            nack = await host.wait_for(lambda f: f.name in ("ack", "nack") and f.fields["ack_seq"] == seq)
            assert (nack.name, nack.fields["reason"]) == ("nack", "safety")  # pod.json does not enable strobe
            seq = host.send("scene", SCENE)
            await host.wait_for(lambda f: f.name == "ack" and f.fields["ack_seq"] == seq)
            await keep_alive(host, 5)
            seq = host.send("scene", dict(SCENE, effect="circle", palette="moon"))
            await host.wait_for(lambda f: f.name == "ack" and f.fields["ack_seq"] == seq)
            for v in range(0, 65536, 8192):  # hostd's group value rising
                host.send("group_value", {"group_id": 1, "value": v})
                await keep_alive(host, 0.4)
            await asyncio.sleep(7)  # silence: fade to safe after 2 s, then a 4 s fade
        finally:
            host.close()
    path = rec / "pod-01.frames"
    records = list(read_frames(path))
    assert len(records) > 300
    frames = np.stack([np.frombuffer(f.rgb, np.uint8).reshape(-1, 3) for _, f in records])
    t_ms = np.array([(w - records[0][0]) * 1000 for w, _ in records])
    assert not frames[0].any() and not frames[1].any()  # boot.py's dark frame, then the app's: dark
    app = records[1:51]  # numbered by the app's Leds from its first frame, none missing
    assert [f.frame_no for _, f in app] == list(range(app[0][1].frame_no, app[0][1].frame_no + 50))
    rep = fa.analyze(t_ms, frames, 20, 1, strict=True)
    assert not rep.violations(2000 - 300), rep  # pod.json defaults: 2000 mA PSU, 300 mA reserve
    last = frames[-1]
    assert (np.abs(last.astype(int) - (255 * 28 // 255, 120 * 28 // 255, 36 * 28 // 255)) <= 1).all(), last[:2]

    png, gif = tmp_path / "strip.png", tmp_path / "strip.gif"
    out = subprocess.run([sys.executable, "-m", "hypnolum", "render", str(path), "--png", str(png), "--gif", str(gif)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with Image.open(png) as im:
        assert im.size[0] == 40 + 24 * 12 and im.size[1] >= 15 * 20
        px = np.asarray(im.convert("RGB"))[:, 40:]
        assert px[0].max() == 0 and px.max() > 60  # dark at boot, lit later
    with Image.open(gif) as im:
        assert im.n_frames > 100


def test_frames_file_errors_are_clear(tmp_path):
    bad = tmp_path / "x.frames"
    bad.write_bytes(b"NOTFRAME" + bytes(FILE_HEADER.size))
    with pytest.raises(FrameFileError, match="not a frames file"):
        list(read_frames(bad))
    out = subprocess.run([sys.executable, "-m", "hypnolum", "render", str(bad), "--png", str(tmp_path / "a.png")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a frames file" in out.stderr
