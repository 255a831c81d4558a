"""Seconds to update pods' firmware over the link, through one hostd, and the EEG samples lost.

    .venv/bin/python bench/update_time.py [--pods 8]

Starts its own mosquitto, emulated boards laid out as the flash tool leaves
them (emulator/flashed.py: the real firmware in slot a/, booted by the real
boot.py on the 32-bit MicroPython at the pod's heap budget, over the emulated
USB CDC link, a pty) and ``hypnolum hostd``. The new build is the firmware
with one constant changed, compiled as the flash tool compiles it for the
emulator (x86 .mpy): the whole app, every file. ``hypnolum update`` sends it.

1. One pod: seconds from running ``hypnolum update`` to its ``ok`` (the
   bundle to hostd over MQTT, the transfer, commit, the reset into the new
   build, hostd's confirmation); target <= 10 s.
2. ``--pods`` pods at once through the same hostd: seconds until every pod's
   ``ok``.
Then the EEG samples lost (``samples_lost`` in each pod's state) while the
bundles went over the link, up to each pod's commit (must be 0; the reset
into the new build is a reboot, whose gap is counted apart).

Exits non-zero if an update failed or a sample was lost.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.burst import broker  # noqa: E402
from helpers.hostd import Hostd  # noqa: E402
from helpers.mqtt_watch import Watcher  # noqa: E402

from hypnolum import paths  # noqa: E402
from hypnolum.emulator.flashed import flashed_pod  # noqa: E402
from hypnolum.flash import bundle, updatekey  # noqa: E402

P = "hypnolum/v1/pods"
KEY = bytes(range(32))


async def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def new_firmware(work: Path) -> Path:
    fw = work / "firmware-new"
    shutil.copytree(paths.FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    status = fw / "pod" / "status.py"
    status.write_text(status.read_text() + "\n_NEXT_BUILD = 1\n")
    return fw


async def update(hostd: Hostd, keys: Path, fw: Path, pods: list[str]) -> tuple[float, str, int]:
    args = [a for p in pods for a in ("--pod", p)]
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hypnolum", "update", "--config", str(hostd.config), "--app-format", "x86",
        "--update-keys", str(keys), *args, str(fw), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return time.monotonic() - t0, out.decode(), proc.returncode


async def main(args: argparse.Namespace) -> int:
    ok = True
    with tempfile.TemporaryDirectory(prefix="hypnolum-update-") as d:
        work = Path(d)
        mosquitto = broker(work / "mosquitto")
        old = bundle.build(paths.FIRMWARE, "x86")
        fw = new_firmware(work)
        size = sum(len(f.data) for f in bundle.build(fw, "x86").slot)
        keys = work / "update-keys"
        names = [f"pod-{i:02d}" for i in range(1, args.pods + 1)]
        for name in names:
            updatekey.write(keys / f"{name}.key", KEY)
        pods = [flashed_pod(name, work / "emu", old, KEY, seed=i) for i, name in enumerate(names, 1)]
        hostd = Hostd(work, mosquitto.port, pods_dir=work / "emu", host_id="update-host")
        try:
            await asyncio.gather(*(p.start() for p in pods))
            async with Watcher(mosquitto.port, filters=(f"{P}/+/state", f"{P}/+/update/progress")) as watch:
                hostd.start()
                for name in names:
                    await wait_for(lambda n=name: (watch.json(f"{P}/{n}/state") or {}).get("link") == "online", 60,
                                   f"{name} online")
                lost: dict[str, int] = {}
                base: dict[str, int] = {}

                def samples_lost(n: str) -> int:
                    return (watch.json(f"{P}/{n}/state")["eeg"] or {}).get("samples_lost", 0)

                def start(run: list[str]) -> None:  # counted from here
                    for n in run:
                        watch.latest.pop(f"{P}/{n}/update/progress", None)
                        lost.pop(n, None)
                        base[n] = samples_lost(n)

                def at_commit() -> None:  # the samples lost up to each pod's commit
                    for n in base:
                        if n not in lost and (watch.json(f"{P}/{n}/update/progress") or {}).get("state") == "committed":
                            lost[n] = samples_lost(n) - base[n]

                async def watch_commits() -> None:
                    while True:
                        at_commit()
                        await asyncio.sleep(0.005)

                start(names[:1])
                watcher = asyncio.create_task(watch_commits())
                seconds, out, rc = await update(hostd, keys, fw, names[:1])
                print(f"one pod: {seconds:.1f} s for the whole app ({size} bytes), result {'ok' if rc == 0 else out}")
                ok = ok and rc == 0
                if len(names) > 1:
                    # every pod, the first one included, from the same old build again: a fresh board
                    await pods[0].stop()
                    shutil.rmtree(pods[0].dir / "b")
                    pods[0] = flashed_pod(names[0], work / "emu", old, KEY, seed=1)
                    await pods[0].start()
                    await wait_for(lambda: (watch.json(f"{P}/{names[0]}/state") or {}).get("build_hash")
                                   == f"0x{old.build_hash:08x}", 60, "pod-01 back on the old build")
                    await wait_for(lambda: (watch.json(f"{P}/{names[0]}/state") or {}).get("link") == "online", 60,
                                   "pod-01 online")
                    # its EEG flowing again, the gap of its restart counted before the run
                    n0 = watch.json(f"{P}/{names[0]}/state")["eeg"]["samples"]
                    await wait_for(lambda: watch.json(f"{P}/{names[0]}/state")["eeg"]["samples"] > n0 + 250, 30,
                                   "pod-01's EEG")
                    start(names)
                    seconds, out, rc = await update(hostd, keys, fw, names)
                    print(f"{len(names)} pods at once: {seconds:.1f} s, result {'ok' if rc == 0 else out}")
                    ok = ok and rc == 0
                at_commit()
                watcher.cancel()
                total = sum(lost.values())
                if total:
                    print("lost by pod:", lost)
                print(f"samples lost during the transfers: {total}"
                      + ("" if len(lost) == len(names) else f" (commits seen for {len(lost)} of {len(names)} pods)"))
                ok = ok and total == 0 and len(lost) == len(names)
        finally:
            hostd.kill()
            await asyncio.gather(*(p.stop() for p in pods), return_exceptions=True)
            mosquitto.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=8, help="pods updated at once in the second run (default 8)")
    raise SystemExit(asyncio.run(main(ap.parse_args())))
