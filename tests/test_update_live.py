"""Updating one pod of a running circle: the others' light and sync go on untouched, and the
updated pod rejoins the circle's timeline within 2 s of coming back.

Three emulated boards flashed with the app (emulator/flashed.py) in one circle on a real
hostd and mosquitto, lit by a scheduled timeline; `hypnolum update` sends one of them a
new build (the firmware with one constant changed)."""
from __future__ import annotations

import asyncio
import shutil
import sys
import time

import pytest

from hypnolum import paths
from hypnolum.emulator.circle_rig import Rig, lit
from hypnolum.flash import bundle, updatekey
from hypnolum.host.commands import SceneSpec

pytestmark = [pytest.mark.micropython, pytest.mark.timeout(120)]

WARM = SceneSpec(effect="solid", brightness=1.0, color=(255, 160, 60))


def _grid_error_us(ours, refs, period_us: float) -> float:
    # the median distance of one pod's frames from another's grid (one late frame says nothing)
    errs = sorted(min(e, period_us - e) for e in ((a - b) % period_us for a in ours for b in refs))
    return errs[len(errs) // 2]


async def test_updating_one_pod_leaves_the_circle_untouched_and_it_rejoins(tmp_path, mosquitto):
    old = bundle.build(paths.FIRMWARE, "x86")
    fw = tmp_path / "firmware-new"
    shutil.copytree(paths.FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    status = fw / "pod" / "status.py"
    status.write_text(status.read_text() + "\n_NEXT_BUILD = 1\n")
    rig = Rig(tmp_path, [mosquitto.port], n_pods=3, n_hosts=1, jitter_s=(0.0, 0.004), pod_nice=None, app=old)
    updatekey.write(tmp_path / "keys" / "pod1.key", rig.update_key)
    await rig.start()
    try:
        await rig.wait_synced(30)
        await rig.define("room", drive="alpha")
        await asyncio.sleep(0.5)
        tl = await rig.schedule("room", WARM, lead_ms=1500)
        pods = [p.pod for p in rig.pods]
        await asyncio.gather(*(p.leds.wait_for(lit, timeout=10) for p in pods))
        await asyncio.sleep(0.5)
        victim, others = pods[1], [pods[0], pods[2]]
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hypnolum", "update", "--config", str(rig.workdir / "host0" / "hostd.toml"),
            "--pod", "pod1", "--app-format", "x86", "--update-keys", str(tmp_path / "keys"), str(fw),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        assert victim.counters.boots == 2  # it reset into the new build once
        # it came back dark (boot.py), then lit again on the timeline within 2 s
        dark = next(f for f in victim.leds.history if f.host_time > t0 and not lit(f))
        back = await victim.leds.wait_for(lambda f: lit(f) and f.host_time > dark.host_time, timeout=2.0)
        assert back.host_time - dark.host_time < 2.0
        await asyncio.sleep(1.0)
        t1 = time.monotonic()
        # the others: lit all along, frames coming without a pause, on each other's grid
        for pod in others:
            frames = [f for f in pod.leds.history if t0 <= f.host_time <= t1]
            assert frames and all(lit(f) for f in frames), pod.pod_id
            gaps = [b.host_time - a.host_time for a, b in zip(frames, frames[1:])]
            assert max(gaps) < 0.5, (pod.pod_id, max(gaps))
        refs = [f.shown_us for f in list(pods[0].leds.history)[-20:] if f.shown_us]
        for pod in (pods[2], victim):
            ours = [f.shown_us for f in list(pod.leds.history)[-20:] if f.shown_us]
            assert _grid_error_us(ours, refs, tl.period_us) < tl.period_us / 4, pod.pod_id
    finally:
        await rig.stop()
