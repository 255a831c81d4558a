"""Pod heap at the heaviest configuration, on the board-faithful emulator.

Every pod runs the real firmware, compiled as for the board, on the 32-bit
MicroPython v1.28.0 unix port with the firmware's committed heap
(firmware/pod/budget.py): 300 LEDs, one pod at 8 ch x 250 Hz and one at
16 ch x 125 Hz (the Cyton with its Daisy), the sample ring full, in a circle
driven by alpha (group values as EEG arrives, FRAME_PHASE, SCENE_AT, pings
every 20 ms) with a scene change every few seconds, through hostd on a real
mosquitto. Prints each pod's lowest and last mem_free (from its STATUS
heartbeats) against the budget and the 25 % floor.

    .venv/bin/python bench/pod_heap.py [--seconds 600] [--pods 2] [--ble] [--census S]

With --ble every pod also has BLE on, and a central (a bumble one, as the tests'
hostd uses) bonds with it, subscribes and stands by while USB carries the link:
what a pod ready for the USB-to-BLE fallback holds (docs/transports.md, "One
link, several transports"). --ble-alone leaves out the central.

With --census S each pod also prints, S seconds in, what its heap holds after a
collection, by object type, and its interned names' headroom (bench/heap_census.py).

Exits 1 when a pod's mem_free went below the floor, or a pod restarted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from hypnolum.broker import PrivateBroker
from hypnolum.emulator import image
from hypnolum.emulator.circle_rig import Rig
from hypnolum.host.commands import SceneSpec

import heap_census

EFFECTS = ("aurora", "breathe", "candle", "palette_drift", "tide", "alpha_bloom", "circle", "heartbeat")


async def watch_heap(rig: Rig, lows: dict[str, int], lasts: dict[str, int], stop: asyncio.Event) -> None:
    async with rig.client() as c:
        await c.subscribe("hypnolum/v1/pods/+/state", qos=1)
        async for msg in c.messages:
            s = json.loads(msg.payload)
            free = ((s.get("counters") or {}).get("pod") or {}).get("mem_free")
            if free:
                pid = s["pod_id"]
                lows[pid] = min(lows.get(pid, free), free)
                lasts[pid] = free
            if stop.is_set():
                return


async def stand_by_centrals(rig: Rig) -> list:
    """A bonded central per pod, connected and subscribed to the pod's notifications, standing by."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers.ble_peer import BumbleGattLink, CentralKeyStore

    from hypnolum.host.transport.ble import NUS_TX

    centrals = []
    for i, p in enumerate(rig.pods):
        g = BumbleGattLink(rig.ble_link, p.pod.ble.address, want_mtu=247, keystore=CentralKeyStore(),
                           address=f"F0:F0:F0:F0:{i >> 8:02X}:{i & 0xFF:02X}")
        await g.connect(20)
        await g.subscribe(NUS_TX, lambda _data: None)
        centrals.append(g)
        if not (p.pod.dir / "ble_bonds.bin").exists():
            raise SystemExit(f"{p.pod.pod_id}: the central did not bond")
    print(f"{len(centrals)} bonded central(s) standing by", flush=True)
    return centrals


async def run(args) -> int:
    budget = image.heap_budget()
    floor = budget // 4
    if args.census:
        os.environ["HYPNOLUM_HEAP_MAP"] = str(args.census)  # the pods inherit it (emulator/mpy/heapmap.py)
    with tempfile.TemporaryDirectory(prefix="hypnolum-heap-") as tmp:
        work = Path(tmp)
        broker = PrivateBroker(work / "broker").start()
        rig = Rig(work, [broker.port], n_pods=args.pods, led_count=300, eeg_channels=(8, 16), jitter_s=None,
                  eeg_publish_interval_s=0, ble=args.ble)
        lows: dict[str, int] = {}
        lasts: dict[str, int] = {}
        stop = asyncio.Event()
        centrals: list = []
        try:
            await rig.start()
            await rig.wait_synced(60)
            centrals = await stand_by_centrals(rig) if args.ble and not args.ble_alone else []
            await rig.define("heap", drive="alpha")
            watcher = asyncio.create_task(watch_heap(rig, lows, lasts, stop))
            t0 = time.monotonic()
            timeline = None
            i = 0
            while time.monotonic() - t0 < args.seconds:
                effect = EFFECTS[i % len(EFFECTS)]
                scene = SceneSpec(effect=effect, brightness=0.8, color=(255, 160, 80), transition_ms=1000)
                timeline = await rig.schedule("heap", scene, lead_ms=500, timeline=timeline)
                i += 1
                await asyncio.sleep(min(args.scene_every, max(0.0, args.seconds - (time.monotonic() - t0))))
                if args.progress:
                    print(f"  t={time.monotonic() - t0:5.0f} s  lowest mem_free {lows}", flush=True)
            stop.set()
            watcher.cancel()
        finally:
            for g in centrals:
                await g.disconnect()
            await rig.stop()
            broker.stop()
        for p in rig.pods if args.census else ():
            c = heap_census.census(p.pod.dir / "micropython.log")
            print(heap_census.summarize(p.pod.pod_id, c) if c else f"{p.pod.pod_id}: no census (run longer)")
        bad = 0
        for p in rig.pods:
            pod = p.pod
            pid = pod.pod_id
            low = lows.get(pid)
            restarts = pod.counters.boots - 1
            ok = low is not None and low >= floor and restarts == 0
            bad += not ok
            print(f"{pid}: {pod.config.led_count} LEDs, {pod.config.eeg_channels} ch at {pod.config.sample_rate_hz} Hz: "
                  f"mem_free lowest {low} B, last {lasts.get(pid)} B of {budget} B "
                  f"({100 * (low or 0) / budget:.0f} % free at worst; floor {floor} B), "
                  f"restarts {restarts}, crashes {pod.counters.crashes}: {'ok' if ok else 'FAILED'}")
        print(f"{args.seconds:.0f} s, {i} scene changes, heap budget {budget} B: "
              f"{'all pods above the floor' if not bad else f'{bad} pod(s) failed'}")
        return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--pods", type=int, default=2)
    ap.add_argument("--scene-every", type=float, default=5.0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--ble", action="store_true", help="BLE on as well (pod.json ble), a bonded central standing by")
    ap.add_argument("--ble-alone", action="store_true", help="with --ble: no central")
    ap.add_argument("--census", type=float, default=0.0, help="seconds in: print what each pod's heap holds")
    raise SystemExit(asyncio.run(run(ap.parse_args())))


if __name__ == "__main__":
    main()
